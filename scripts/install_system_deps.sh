#!/usr/bin/env bash
# System packages relaxtune needs:
#   gfortran  - escnn's py3nj dependency compiles Fortran when it is installed
#   chromium, chromium-driver - the dashboard's browser tests (headless, driven by selenium)
#   docker-compose - validating docker-compose.yml in the tests (no engine needed)
# Installs the missing ones with apt-get when run as root; otherwise says what to run.
set -euo pipefail
need=()
command -v gfortran >/dev/null 2>&1 || need+=(gfortran)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "relaxtune: missing system packages: ${need[*]} (install them with your package manager)" >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=sudo
  else
    echo "relaxtune: missing system packages: ${need[*]}" >&2
    echo "relaxtune: installing them needs root: sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
else
  SUDO=
fi
echo "relaxtune: installing system packages: ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
