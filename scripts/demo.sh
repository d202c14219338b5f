#!/usr/bin/env bash
# The demo command: ./scripts/demo.sh
#
# Installs spanprof into .venv/demo (compiling its C extension), records the
# bundled demo service (examples/demo_service.py) with `spanprof run`, and says
# where the profiles are and how to look at them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${SPANPROF_DEMO_OUT:-$ROOT/spanprof-out}"
VENV="$ROOT/.venv/demo"

# A CPython 3.10-3.13: $PYTHON, else python3 on PATH, else the newest under pyenv.
pick_python() {
    local candidates=("${PYTHON:-}" python3) v
    for v in 3.13 3.12 3.11 3.10; do
        candidates+=("$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/python3 2>/dev/null |
            sort -V | tail -n 1)")
    done
    for py in "${candidates[@]}"; do
        [[ -n "$py" ]] && command -v "$py" >/dev/null 2>&1 &&
            "$py" -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 13))' \
                2>/dev/null && { echo "$py"; return; }
    done
    echo "demo: no CPython 3.10-3.13 found (set PYTHON=/path/to/python3)" >&2
    exit 1
}

if [[ ! -x "$VENV/bin/spanprof" ]]; then
    "$(pick_python)" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "$ROOT"

rm -rf "$OUT"
"$VENV/bin/spanprof" run -o "$OUT" examples/demo_service.py

echo
"$VENV/bin/spanprof" summary "$OUT" --limit 8

cat <<MSG

Recorded in $OUT: a local store (spanprof.db) and pprof files (one per process
per window). Explore it in your browser: traces slowest first, a trace's spans
with the CPU and wall time sampled under each, a span's flame graph across
every thread that worked for it:

  $VENV/bin/spanprof view $OUT

Or: spanprof flamegraph $OUT -o flame.html [--endpoint 'GET /report'],
    spanprof export $OUT --format speedscope -o profile.speedscope.json,
    or open the .pprof files with any pprof tool (they carry the span labels).
MSG
