#!/usr/bin/env bash
# Start the local PostgreSQL cluster if it is not accepting connections (the store's
# contract suite runs its PostgreSQL half against it; see README "Tests").
set -euo pipefail
HOST=${RELAXTUNE_PG_HOST:-127.0.0.1}
PORT=${RELAXTUNE_PG_PORT:-5432}
if pg_isready -q -h "$HOST" -p "$PORT" 2>/dev/null; then
  exit 0
fi
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "relaxtune: PostgreSQL is not running on $HOST:$PORT and pg_ctlcluster is not available" >&2
  exit 1
fi
version=$(ls /etc/postgresql | sort -V | tail -1)
echo "relaxtune: starting PostgreSQL $version"
pg_ctlcluster --skip-systemctl-redirect "$version" main start
for _ in $(seq 1 30); do
  pg_isready -q -h "$HOST" -p "$PORT" && exit 0
  sleep 1
done
echo "relaxtune: PostgreSQL did not come up on $HOST:$PORT" >&2
exit 1
