#!/bin/bash
# The GPU benchmarks as one prepared run on a bare GPU machine whose Python already has torch and
# torchvision (no network there): `make gpu-wheels` here first, copy the tree with .whl/ to it, then
#   BENCHES="score train" OUT=/some/dir bash bench/gpu.sh
# Installs our other dependencies from .whl/ into /tmp/site, prints what the machine is, runs each
# benchmark with `--device cuda` under a time limit (figures in bench/results/*_gpu.json) and copies
# the logs and figures to $OUT (default /tmp/wit-gpu-bench).
set -o pipefail
export PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1 WANDB_MODE=disabled WANDB_DISABLED=true TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/wit-gpu-bench}
mkdir -p "$OUT"
ls .whl/*.whl >/dev/null 2>&1 || { echo "error: no wheels in .whl/ (run make gpu-wheels where PyPI is reachable)"; exit 1; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
nproc; cat /sys/fs/cgroup/cpu.max 2>/dev/null; grep -m1 "model name" /proc/cpuinfo; uname -r
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
for b in ${BENCHES:-score train}; do
  echo "=== $b $(date +%T)"
  timeout "$([ "$b" = score ] && echo 240 || echo 300)" python3 -m "bench.$b" --device cuda 2>&1 | grep -v "WARNING: model" | tee "$OUT/$b.log"
done
cp bench/results/*_gpu.json "$OUT"/ 2>/dev/null
echo "=== done $(date +%T)"
