#!/usr/bin/env bash
# Give one host least-privilege access to Vault: a policy `dtma-HOST` that reads only the secrets
# of the toolboxes it runs (secret/dtma/<toolbox>/*; docs/secrets.md), an AppRole `dtma-HOST`
# whose secret_id and tokens work only from CIDR and whose secret_id expires, and the files the
# agent reads (DTMA_VAULT_ROLE_ID_FILE, DTMA_VAULT_SECRET_ID_FILE), mode 0600.
#
# Usage: approle-setup.sh HOST CIDR OUTPUT_DIR TOOLBOX [TOOLBOX...]
#   e.g. approle-setup.sh web-1 10.0.4.17/32 /etc/dtma demo github-tools
# Environment: VAULT_ADDR and a VAULT_TOKEN allowed to manage policies and auth (`vault` or `bao`
# CLI on PATH); SECRET_ID_TTL (default 720h): after it, login fails until you run this again
# (which writes a fresh secret_id; copy it to the host and restart the agent). Running it again
# also rewrites the policy, so it is how a host gets a toolbox added or removed.
set -euo pipefail
usage="usage: approle-setup.sh HOST CIDR OUTPUT_DIR TOOLBOX [TOOLBOX...]"
[ $# -ge 4 ] || { echo "$usage" >&2; exit 2; }
host=$1 cidr=$2 out=$3
shift 3
ttl=${SECRET_ID_TTL:-720h}
name_re='^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'
[[ $host =~ $name_re ]] || { echo "HOST must be a DNS label, got '$host'" >&2; exit 2; }
[[ $cidr =~ ^[0-9a-fA-F.:]+/[0-9]+$ ]] || { echo "CIDR must look like 10.0.4.17/32, got '$cidr'" >&2; exit 2; }
for tb in "$@"; do
  [[ $tb =~ $name_re ]] || { echo "TOOLBOX must be a toolbox id (a DNS label), got '$tb'" >&2; exit 2; }
done
cli=$(command -v vault || command -v bao) || { echo "need the vault or bao CLI on PATH" >&2; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)

policy=$(
  cat "$here/dtma-policy.hcl"
  for tb in "$@"; do
    printf '\n# toolbox %s\npath "secret/data/dtma/%s/*" {\n  capabilities = ["read"]\n}\n' "$tb" "$tb"
  done
)
printf '%s\n' "$policy" | "$cli" policy write "dtma-$host" - >/dev/null
auths=$("$cli" auth list -format=json)  # not piped into grep -q: pipefail + SIGPIPE would lie
[[ $auths == *'"approle/"'* ]] || "$cli" auth enable approle >/dev/null
"$cli" write "auth/approle/role/dtma-$host" token_policies="dtma-$host" token_ttl=1h \
  token_max_ttl=24h secret_id_ttl="$ttl" secret_id_num_uses=0 \
  secret_id_bound_cidrs="$cidr" token_bound_cidrs="$cidr" >/dev/null
umask 077
mkdir -p "$out"
"$cli" read -field=role_id "auth/approle/role/dtma-$host/role-id" > "$out/vault-role-id"
"$cli" write -f -field=secret_id "auth/approle/role/dtma-$host/secret-id" > "$out/vault-secret-id"
echo "policy dtma-$host reads secret/dtma/{$(IFS=,; echo "$*")}/*; secret_id valid for $ttl from $cidr"
echo "wrote $out/vault-role-id and $out/vault-secret-id (mode 0600)"
