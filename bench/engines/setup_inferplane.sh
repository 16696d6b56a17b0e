#!/usr/bin/env bash
# Measure what installing inferplane's model server costs, for the engines table (install time and size), in a
# throwaway venv; the benchmark itself runs `python -m inferplane serve` from the Python inferplane is installed in.
#   engine:  pip install openvino-genai openvino-tokenizers   (the inference engine alone)
#   full:    pip install <repo>                              (inferplane with every dependency: Envoy, gRPC, ...)
# Writes $BENCH_WORK/inferplane-setup.json (read by run.py). Re-run to re-measure; pip's cache makes later runs faster,
# as it does for setup_vllm_cpu.sh.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WORK="${BENCH_WORK:-$REPO/bench/.work}"
PY_BASE="${PYTHON:-python3.11}"
RECORD="$WORK/inferplane-setup.json"
TMP="$(mktemp -d /tmp/inferplane-setup.XXXXXX)"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$WORK"

measure() {  # name, pip args...
    local name="$1"; shift
    local venv="$TMP/$name"
    local t0 t1
    t0=$(date +%s.%N)
    "$PY_BASE" -m venv "$venv"
    "$venv/bin/pip" install -q "$@" 2>&1 | grep -v "is ignored" || true
    t1=$(date +%s.%N)
    "$venv/bin/python" -c "import openvino_genai" || { echo "install $name failed" >&2; exit 1; }
    echo "$name $(python3 -c "print(round($t1 - $t0, 1))") $(du -sb "$venv" | cut -f1)"
}

engine=$(measure engine openvino-genai openvino-tokenizers)
full=$(measure full "$REPO")
"$PY_BASE" - "$RECORD" "$engine" "$full" <<'PY'
import json, sys, datetime
record, engine, full = sys.argv[1:4]
_, e_s, e_b = engine.split()
_, f_s, f_b = full.split()
data = {
    "install_s": float(e_s), "venv_bytes": int(e_b),
    "what": "pip install openvino-genai openvino-tokenizers (engine alone) into a fresh venv",
    "full_install_s": float(f_s), "full_venv_bytes": int(f_b),
    "full_what": "pip install <repo> (inferplane and all its dependencies) into a fresh venv",
    "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
}
json.dump(data, open(record, "w"), indent=2)
print(json.dumps(data, indent=2))
PY
