#!/usr/bin/env bash
# Install PostgreSQL from Debian's packages if it is missing, start it, and print the URL of a
# database the test suite may create and drop databases through. Used by `make test` and CI.
set -euo pipefail

PASSWORD=stillhouse
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

if ! command -v pg_lsclusters >/dev/null 2>&1; then
  echo "installing PostgreSQL (Debian package)..." >&2
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >&2
fi

read -r version cluster port _ < <(pg_lsclusters -h | head -n 1)
if [ -z "${version:-}" ]; then
  version=$(ls /usr/lib/postgresql | sort -n | tail -n 1)
  $SUDO pg_createcluster "$version" main >&2
  cluster=main
  port=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $3}')
fi
$SUDO pg_ctlcluster "$version" "$cluster" start >&2 2>/dev/null || true
for _ in $(seq 1 50); do
  pg_isready -q -h 127.0.0.1 -p "$port" && break
  sleep 0.2
done
pg_isready -q -h 127.0.0.1 -p "$port" || { echo "PostgreSQL did not start" >&2; exit 1; }
$SUDO su postgres -c "psql -q -p $port -c \"ALTER USER postgres PASSWORD '$PASSWORD'\"" >&2
echo "postgresql://postgres:$PASSWORD@127.0.0.1:$port/postgres"
