#!/usr/bin/env bash
# Install what building and testing Thyme needs on a fresh Debian machine:
# the C toolchain pieces for RocksDB (and later librdkafka), psql, and a
# Python virtualenv with the test clients. Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

packages=(build-essential libclang-dev clang cmake pkg-config libcurl4-openssl-dev libsasl2-dev libssl-dev openssl postgresql-client python3-venv python3-dev wrk)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust with rustup first" >&2
  exit 1
fi

if [ ! -x "$THYME_VENV/bin/python" ]; then
  python3 -m venv "$THYME_VENV"
fi
"$THYME_VENV/bin/pip" install -q --disable-pip-version-check -r tests/requirements.txt
# The thyme Python package (SDK, CLI, client) with its native module, built
# by maturin into the shared cargo target directory.
"$THYME_VENV/bin/pip" install -q --disable-pip-version-check ./python
