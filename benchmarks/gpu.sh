#!/usr/bin/env bash
# The in-process benchmark tables for GPU runtimes, on a machine with one NVIDIA GPU (< 5 minutes).
#
#   bash benchmarks/gpu.sh            # writes docs/bench/gpu.json + docs/bench/gpu.md; `make bench` includes them
#   bash benchmarks/gpu.sh --cpu      # same code on the CPU (no GPU needed): a code-path check only
#   bash benchmarks/gpu.sh --quick    # seconds per model
#
# Runtimes: eager and TorchScript in fp32/fp16 on CUDA, ONNX Runtime CUDA fp32/fp16, and ONNX Runtime
# TensorRT fp16 where onnxruntime-gpu and libnvinfer are installed (see benchmarks/gpu.py).
# PYTHON picks the interpreter (default: the project's .venv, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
cpu=0
for arg in "$@"; do [ "$arg" = "--cpu" ] && cpu=1; done

if [ "$cpu" = 0 ]; then
  if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu.sh: error: no NVIDIA GPU visible (nvidia-smi -L failed); use --cpu to check the code path here" >&2
    exit 2
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
"$PYTHON" -c "import torch, onnxruntime as o; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), '| onnxruntime', o.__version__, o.get_available_providers())"

# 290 s: the whole script stays under 5 minutes; gpu.py stops measuring at --budget-s and still writes its tables.
exec timeout --signal=INT 290 "$PYTHON" -m benchmarks.gpu --budget-s 240 "$@"
