#!/usr/bin/env bash
# Crash run at full size: 20 kill -9 at random moments during a 1M-event
# ingest with a windowed aggregation pipeline; the output must equal an
# uninterrupted run's. (CI runs the same harness at 100k events:
# tests/test_pipeline_crash.py.)
#   bench/crash.sh            # release build, 1M events, 20 kills -> bench/results/crash.md
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
cargo build --locked -q --release --workspace --bins --examples
EVENTS="${BENCH_EVENTS:-1000000}" KILLS="${BENCH_KILLS:-20}"
"$THYME_VENV/bin/python" - "$CARGO_TARGET_DIR/release/thyme" "$EVENTS" "$KILLS" <<'PY'
import os, random, sys, tempfile, time
sys.path.insert(0, "tests")
from crash_harness import run
binary, n, kills = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
seed = int(os.environ.get("THYME_SEED", random.randrange(1 << 30)))
log = []
with tempfile.TemporaryDirectory(prefix="thyme-crash-") as d:
    t = time.time()
    killed, diff = run(binary, d, n, kills, seed, log=lambda s: (print(s, flush=True), log.append(s)))
    secs = time.time() - t
status = "identical" if diff is None else f"DIFFERENT: {diff}"
print(f"seed {seed}: {killed} kills, outputs {status}")
with open("bench/results/crash.md", "w") as f:
    f.write("# Crash run\n\nCommand: `bench/crash.sh` (release build). "
            f"Date {time.strftime('%Y-%m-%d', time.gmtime())}.\n\n")
    f.write(f"- THYME_SEED={seed}, {n:,} events in 1,000-row requests, {killed} `kill -9` at random moments "
            "(during ingest and pipeline steps), each followed by a restart on the same data directory and "
            "a resumed ingest from the stored row count.\n")
    for s in log:
        f.write(f"- {s}\n")
    f.write(f"- Result: the effective history of the aggregated dataset is **{status}** to the uninterrupted run's "
            f"({secs:.0f} s in all).\n")
sys.exit(0 if diff is None else 1)
PY
