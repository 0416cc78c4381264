#!/usr/bin/env bash
# The GRACE supervised demo recipe on one CPU: offline triplets -> GRPO -> the local mteb tasks for the untrained
# and the trained model (rationale mode, greedy, 32 new tokens). OUT (default outputs) holds everything.
set -euo pipefail
OUT=${OUT:-outputs}
D=recipes/grace/SmolLM2-135M-Instruct
DATA=$OUT/data/grace-triplets
RUN=$OUT/grace/SmolLM2-135M-Instruct/supervised
[ -f "$DATA/README.md" ] || python dataset_builders/grace_triplets.py --source offline --max-rows 2000 --output-dir "$DATA"
[ -f "$RUN/grace_config.json" ] || accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/grace/grpo.py \
  --config $D/config_supervised.yaml --dataset_name "$DATA" --output_dir "$RUN"
for model in HuggingFaceTB/SmolLM2-135M-Instruct "$RUN"; do
  retrieval-policies grace evaluate --model "$model" --temperature 0 --max-new-tokens 32 --output-dir "$OUT/results/mteb" \
    --rationale-cache "$OUT/rationale-cache"
done
