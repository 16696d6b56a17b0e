#!/usr/bin/env bash
# Optional third engine: llama.cpp's server from the prebuilt xllamacpp wheel, in its own venv (idempotent).
# Records install time and size in $BENCH_WORK/xllamacpp-setup.json (read by run.py --engines ... xllamacpp).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WORK="${BENCH_WORK:-$REPO/bench/.work}"
VENV="$WORK/xllamacpp-venv"
RECORD="$WORK/xllamacpp-setup.json"
PY_BASE="${PYTHON:-python3.11}"
SPEC="${XLLAMACPP_SPEC:-xllamacpp==2026.10.11549}"
mkdir -p "$WORK"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import xllamacpp" 2>/dev/null && [ -f "$RECORD" ]; then
    echo "xllamacpp already set up: $VENV"; cat "$RECORD"; exit 0
fi
t0=$(date +%s.%N)
rm -rf "$VENV"
"$PY_BASE" -m venv "$VENV"
"$VENV/bin/pip" install -q "$SPEC" 2>&1 | grep -v "is ignored" || true
t1=$(date +%s.%N)
"$VENV/bin/python" - "$RECORD" "$VENV" "$(python3 -c "print(round($t1 - $t0, 1))")" "$(du -sb "$VENV" | cut -f1)" <<'PY'
import json, sys, datetime, xllamacpp
record, venv, secs, size = sys.argv[1:5]
data = {"install_s": float(secs), "venv_bytes": int(size), "venv": venv, "version": xllamacpp.__version__,
        "installed_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
json.dump(data, open(record, "w"), indent=2)
print(json.dumps(data, indent=2))
PY
