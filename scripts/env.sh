# Shared settings for the scripts (sourced, not run).
# The cargo target directory lives outside the clone so that fresh clones
# reuse earlier builds (cargo's fingerprints keep it correct).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/thyme/target}"
export THYME_VENV="${THYME_VENV:-$HOME/.cache/thyme/venv}"
export THYME_BIN="${THYME_BIN:-$CARGO_TARGET_DIR/debug/thyme}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export VIRTUAL_ENV="${VIRTUAL_ENV:-$THYME_VENV}"   # the server runs pipeline Python functions with these packages
