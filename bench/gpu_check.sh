#!/usr/bin/env bash
# The prepared GPU check (issue 18): run it first thing on a GPU machine. A thin wrapper around
# bench/gpu_check.py, where everything is (parts, timeouts, summary). At most --budget seconds (480).
#
#   bash bench/gpu_check.sh [OUTDIR]                      # OUTDIR: default $OUT, else runs/gpu_check
#   bash bench/gpu_check.sh --device cpu --quick OUTDIR   # every part at tiny sizes on the CPU
#   python bench/gpu_check.py --help                      # all options
#
# Writes OUTDIR/summary.json, OUTDIR/summary.md (tables for docs/benchmarks.md), OUTDIR/gpu_check.log
# and the parts' logs (OUTDIR/logs/, or OUTDIR/logs.tar.gz when OUTDIR is the device tool's $OUT).
# Exit code 0 when no part failed or timed out (skipped parts are fine), 1 otherwise.
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.." || exit 2
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
exec "$PYTHON" bench/gpu_check.py "$@"
