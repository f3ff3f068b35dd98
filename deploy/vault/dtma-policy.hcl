# What a dtma agent may read: the KV v2 paths its toolboxes reference, nothing else.
# Narrow "dtma/*" to the paths your toolboxes use.
path "secret/data/dtma/*" {
  capabilities = ["read"]
}
path "secret/metadata/dtma/*" {
  capabilities = ["read"]
}
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
