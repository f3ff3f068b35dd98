#!/usr/bin/env bash
# Create the dtma policy and an AppRole for one host, and write its role_id and secret_id to
# files the agent reads (DTMA_VAULT_ROLE_ID_FILE, DTMA_VAULT_SECRET_ID_FILE).
# Needs VAULT_ADDR and a VAULT_TOKEN allowed to manage policies and auth; `vault` or `bao` CLI.
# Usage: approle-setup.sh HOSTNAME OUTPUT_DIR
set -euo pipefail
host=${1:?usage: approle-setup.sh HOSTNAME OUTPUT_DIR}
out=${2:?usage: approle-setup.sh HOSTNAME OUTPUT_DIR}
cli=$(command -v vault || command -v bao) || { echo "need the vault or bao CLI" >&2; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)

"$cli" policy write dtma "$here/dtma-policy.hcl"
"$cli" auth list -format=json | grep -q '"approle/"' || "$cli" auth enable approle
"$cli" write "auth/approle/role/dtma-$host" token_policies=dtma token_ttl=1h \
  token_max_ttl=24h secret_id_num_uses=0 secret_id_ttl=0
umask 077
mkdir -p "$out"
"$cli" read -field=role_id "auth/approle/role/dtma-$host/role-id" > "$out/vault-role-id"
"$cli" write -f -field=secret_id "auth/approle/role/dtma-$host/secret-id" > "$out/vault-secret-id"
echo "wrote $out/vault-role-id and $out/vault-secret-id (mode 0600)"
