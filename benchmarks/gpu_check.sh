#!/usr/bin/env bash
# A prepared GPU check on the device machine (see docs/gpu.md). CHECK is grace or dynamicrag.
#   here:   bash benchmarks/gpu_check.sh fetch CHECK    # wheels into .whl/ (git-ignored via .git/info/exclude)
#   device: bash benchmarks/gpu_check.sh run CHECK      # (run with carry [".whl"]); writes $OUT/gpu_check_CHECK.json
# The device image has torch, transformers 5.17, accelerate, peft, pyarrow and pandas; trl and datasets (and the
# transformers / huggingface_hub versions this project pins) travel as wheels, and for DynamicRAG the evaluate metrics'
# dependencies (rouge_score has no wheel on PyPI: it is built here, pure Python).
set -euo pipefail
CHECK=${2:-}
[[ "$CHECK" == grace || "$CHECK" == dynamicrag ]] || { echo "usage: $0 fetch|run grace|dynamicrag" >&2; exit 2; }
WHEELS=(trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 transformers==5.24.0 huggingface-hub==2.4.0 httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5)
[[ "$CHECK" == dynamicrag ]] && WHEELS+=(evaluate==0.4.6 absl-py nltk joblib click regex xxhash)
case "${1:-}" in
  fetch)
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
      -d .whl "${WHEELS[@]}"
    [[ "$CHECK" == dynamicrag ]] && python3 -m pip wheel --no-deps -w .whl rouge-score==0.1.2
    du -sh .whl ;;
  run)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:src PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total --format=csv
    timeout 480 python3 "benchmarks/gpu_check_$CHECK.py" --output "${OUT:-.}/gpu_check_$CHECK.json" 2>&1 | tee "${OUT:-.}/gpu_check_$CHECK.log" ;;
  *) echo "usage: $0 fetch|run grace|dynamicrag" >&2; exit 2 ;;
esac
