#!/usr/bin/env bash
# The GRACE GPU check on the device machine, prepared here (see benchmarks/README.md).
#   here:   bash benchmarks/gpu_check_grace.sh fetch     # wheels into .whl/ (git-ignored via .git/info/exclude)
#   device: bash benchmarks/gpu_check_grace.sh run       # (run with carry [".whl"]); writes $OUT/gpu_check_grace.json
# The device image has torch, transformers 5.17, accelerate, peft, pyarrow and pandas; trl and datasets (and the
# transformers / huggingface_hub versions this project pins) travel as wheels.
set -euo pipefail
WHEELS=(trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 transformers==5.24.0 huggingface-hub==2.4.0 httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5)
case "${1:-}" in
  fetch)
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
      -d .whl "${WHEELS[@]}"
    du -sh .whl ;;
  run)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:src PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total --format=csv
    timeout 480 python3 benchmarks/gpu_check_grace.py --output "${OUT:-.}/gpu_check_grace.json" 2>&1 | tee "${OUT:-.}/gpu_check_grace.log" ;;
  *) echo "usage: $0 fetch|run" >&2; exit 2 ;;
esac
