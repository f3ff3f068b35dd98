# The part of every dtma host's Vault policy that does not depend on its toolboxes.
# approle-setup.sh writes one policy per host, `dtma-<host>`: this file plus, for each toolbox
# the host runs, read access to that toolbox's secrets and nothing else:
#
#   path "secret/data/dtma/<toolbox>/*" { capabilities = ["read"] }
#
# The path convention (docs/secrets.md): a toolbox's secrets live under dtma/<toolbox id>/ in the
# KV v2 mount "secret", e.g. {mount: secret, path: dtma/demo/notes, key: api_key}. A host can
# therefore read the secrets of the toolboxes it runs and is denied every other toolbox's.

# The agent detects a mount's KV version through this endpoint.
path "sys/internal/ui/mounts/secret" {
  capabilities = ["read"]
}
# Renewing its own token.
path "auth/token/renew-self" {
  capabilities = ["update"]
}
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
