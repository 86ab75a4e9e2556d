#!/bin/bash
# The GPU checks in one run, for a lent GPU machine whose Python has PyTorch with CUDA (README: "GPU figures").
#
#   bash benchmarks/gpu_session.sh            # on the GPU machine, from the repository root; $OUT: where logs go
#
# Before: wheels of the project's dependencies that the machine lacks in .whl/ (installed with --no-deps into
# /tmp/site), and the shared data and models in .devshared/ (a copy of ../shared/{data,models}, never committed).
# It probes for TensorRT, runs the GPU tests, times the embedders (benchmarks/embed.py) and runs the pipeline
# with the ReID model on CUDA and with the defaults (benchmarks/capacity.py). Each step has its own timeout so a
# hang costs one step, not the lease.
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_session}; mkdir -p "$OUT"
T0=$(date +%s); step() { echo "== $(( $(date +%s) - T0 )) s: $*"; }
if [ -z "$NO_WHEELS" ] && compgen -G ".whl/*.whl" >/dev/null; then  # NO_WHEELS=1: this Python's packages only
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
SHARED=${CCREID_SHARED:-$PWD/.devshared}
export CCREID_SHARED=$SHARED PIPELINE_MODELS=$SHARED/models YOLO_OFFLINE=1
VIDEO=$SHARED/data/pets09-s2l1/vtest.avi
step probe
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$OUT/probe.txt"
python3 - <<'PY' 2>&1 | tee -a "$OUT/probe.txt"
import importlib.util, torch, onnxruntime as ort
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA GPU")
print("onnxruntime", ort.__version__, ort.get_available_providers())
for m in ("tensorrt", "tensorrt_lean", "torch_tensorrt", "openvino"):
    print(m, "found" if importlib.util.find_spec(m) else "not installed")
from reid.inference.tensorrt_backend import tensorrt_available
print("tensorrt_available:", tensorrt_available())
PY
(ldconfig -p | grep -i -E "nvinfer|nvonnxparser" || echo "ldconfig: no libnvinfer") | tee -a "$OUT/probe.txt"
# The random-init ResNet-50 that embed.py times, saved once for the export probe and the capacity run.
R50=$(python3 -c "
import sys; from pathlib import Path; sys.path.insert(0, 'benchmarks')
from embed import make_random_checkpoint
print(make_random_checkpoint('resnet50', Path('/tmp')))") || exit 1
timeout 120 python3 -m reid export --weights "$R50" --format tensorrt --fp16 --out /tmp/r50.onnx 2>&1 \
  | tail -3 | tee -a "$OUT/probe.txt"
step tests
timeout 150 python3 -m pytest -q -p no:cacheprovider -rs tests/test_deploy_torch_cuda.py tests/test_deploy_tensorrt.py 2>&1 \
  | tee "$OUT/pytest.log" | tail -8
step embed
timeout 200 python3 benchmarks/embed.py --random resnet50 --threads "$(nproc)" --batch 1,16,64 --seconds 4 --rounds 2 \
  --backends torch,onnxruntime,torch-cuda,torch-cuda-fp16,tensorrt-fp16 --json "$OUT/embed.json" 2>&1 | tee "$OUT/embed.log" | tail -9
step capacity
timeout 200 python3 benchmarks/capacity.py --video "$VIDEO" --cameras 8 32 --frames 100 --set reid.model="$R50" \
  --set reid.backend=torch --json "$OUT/capacity_cuda.json" 2>&1 | tee "$OUT/capacity_cuda.log" | tail -5
timeout 120 python3 benchmarks/capacity.py --video "$VIDEO" --cameras 8 --frames 100 --json "$OUT/capacity_default.json" 2>&1 \
  | tee "$OUT/capacity_default.log" | tail -4
step done
