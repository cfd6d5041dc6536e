#!/usr/bin/env bash
# Install Debian's Chromium if it is missing (the dashboard's browser tests drive it with
# Playwright's Python package; never `playwright install`, which downloads a browser). Used by
# `make test` and CI.
set -euo pipefail

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

if ! command -v chromium >/dev/null 2>&1; then
  echo "installing Chromium (Debian package)..." >&2
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >&2
fi
command -v chromium
