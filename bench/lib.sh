# Shell helpers for the benchmark scripts (sourced after scripts/env.sh).

# build_thyme release|debug: build the whole workspace (building one package
# alone resolves features differently and would rebuild RocksDB) and set
# BIN to the thyme binary of that profile.
# THYME_BENCH_BIN, when set, is the binary to measure instead (no build):
# bench/before_after.sh compares two builds that way.
build_thyme() {
  if [ -n "${THYME_BENCH_BIN:-}" ]; then
    BIN="$THYME_BENCH_BIN"
  elif [ "$1" = release ]; then
    cargo build --locked --release --workspace --bins --examples
    BIN="$CARGO_TARGET_DIR/release/thyme"
  else
    cargo build --locked --workspace --all-targets
    BIN="$THYME_BIN"
  fi
}

# feast_venv: a virtualenv with Feast (created on first use); sets FEAST_VENV.
feast_venv() {
  FEAST_VENV="${FEAST_VENV:-$HOME/.cache/thyme/feast-venv}"
  if [ ! -x "$FEAST_VENV/bin/feast" ]; then
    python3 -m venv "$FEAST_VENV"
    "$FEAST_VENV/bin/pip" install -q --disable-pip-version-check feast
  fi
}
