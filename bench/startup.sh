#!/usr/bin/env bash
# Time from `make run` to a 200 on /v1/health, then stop it with SIGINT (as Ctrl-C would).
# Usage: bench/startup.sh [RUNS]   (default 2; the first run may be cold, later ones are warm)
# Run it from a clone whose port 8750 is free.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-2}
url=http://127.0.0.1:8750/v1/health
for i in $(seq 1 "$runs"); do
  log=$(mktemp)
  t0=$(date +%s.%N)
  setsid make run >"$log" 2>&1 &
  pid=$!
  ok=0
  for _ in $(seq 1 6000); do   # bounded: 10 minutes at most
    if curl -sf -o /dev/null "$url"; then ok=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  t1=$(date +%s.%N)
  kill -INT -- -"$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [ "$ok" = 1 ]; then
    awk -v i="$i" -v a="$t0" -v b="$t1" 'BEGIN { printf "run %d: make run -> /v1/health 200 in %.1f s\n", i, b - a }'
  else
    echo "run $i: the agent never answered; log:"; tail -20 "$log"; exit 1
  fi
  rm -f "$log"
done
