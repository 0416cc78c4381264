#!/usr/bin/env bash
# The whole DynamicRAG demo recipe on one CPU: data -> SFT -> sample -> rewards -> pairs -> DPO -> evaluation of
# the SFT and DPO models on the held-out test questions. OUT (default outputs) holds everything.
set -euo pipefail
OUT=${OUT:-outputs}
D=recipes/dynamicrag/SmolLM2-135M-Instruct
DATA=$OUT/data/dynamicrag-training-5
RUN=$OUT/dynamicrag/SmolLM2-135M-Instruct
LAUNCH="accelerate launch --config_file recipes/accelerate_configs/cpu.yaml"
[ -f "$DATA/README.md" ] || python dataset_builders/dynamicrag_training.py --source cloze --top-n 5 --max-length 5 --per-length-cap 250 --tokenizer HuggingFaceTB/SmolLM2-135M-Instruct --max-seq-length 1536 --output-dir "$DATA"
[ -f "$RUN/sft/dynamicrag_config.json" ] || $LAUNCH recipes/dynamicrag/sft.py --config $D/config_sft.yaml --dataset_name "$DATA" --output_dir "$RUN/sft"
python recipes/dynamicrag/sample.py --config $D/config_sample.yaml --model_name_or_path "$RUN/sft" --dataset_name "$DATA" --output_file "$RUN/trajectories.jsonl"
python recipes/dynamicrag/rewards.py --config $D/config_rewards.yaml --trajectories_file "$RUN/trajectories.jsonl" --output_file "$RUN/rewards.jsonl"
python recipes/dynamicrag/pairs.py --config $D/config_pairs.yaml --rewards_file "$RUN/rewards.jsonl" --output_dir "$RUN/pairs"
[ -f "$RUN/dpo/dynamicrag_config.json" ] || $LAUNCH recipes/dynamicrag/dpo.py --config $D/config_dpo.yaml --model_name_or_path "$RUN/sft" --dataset_name "$RUN/pairs" --output_dir "$RUN/dpo"
for stage in sft dpo; do
  [ -f "$RUN/eval-$stage.json" ] || retrieval-policies dynamicrag evaluate --model "$RUN/$stage" --data "$DATA" --config pool --split test --max-questions 64 --output "$RUN/eval-$stage.json"
done
