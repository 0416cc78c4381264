"""The prepared GPU check of DynamicRAG (one CUDA GPU, bf16, under 8 minutes; no download: a tiny random Llama, a
tiny random BERT for BERTScore and a byte-level ChatML tokenizer are built here, and the data is synthetic).

Every stage runs through its recipe's own ``main`` (recipes/dynamicrag/*.py), in this order, with its time printed:

1. SFT, 2 steps, bf16 (TRL SFTTrainer), then the SFT repo loads with nothing given on the GPU in bf16;
2. sampling of 4 lists per held-out (``dpo``) question with the HF backend on the GPU;
3. rewards with the BERTScore model and the judge placed on the GPU (their devices are checked);
4. pairs;
5. DPO, 2 steps, bf16, with TRL loading the reference from the SFT folder (no deep copy);
6. ``retrieval-policies dynamicrag evaluate`` of the DPO model on the test questions, on the GPU in bf16.

Run on the device machine (wheels travel; see docs/gpu.md):
    bash benchmarks/gpu_check.sh run dynamicrag   (after `bash benchmarks/gpu_check.sh fetch dynamicrag` here)
On a CPU (to test the script itself): ``PYTHONPATH=src python benchmarks/gpu_check_dynamicrag.py --device cpu``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from gpu_check_grace import build_model, build_tokenizer  # noqa: E402 - the same tiny tokenizer and Llama

PASSAGES = 6


def recipe(stage: str):
    """recipes/dynamicrag/<stage>.py as a module (its ``main`` and argument dataclasses)."""
    spec = importlib.util.spec_from_file_location(
        f"dynamicrag_{stage}", ROOT / "recipes" / "dynamicrag" / f"{stage}.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def synthetic_rows() -> list[dict]:
    """Questions whose answer is stated in one of six passages (not always the first), with train/dpo/test splits."""
    rows = []
    for i in range(48):
        where = (i * 5) % PASSAGES
        ctxs = [
            {
                "id": f"{i}-{j}",
                "title": f"City {i}" if j == where else f"Filler {j}",
                "text": f"name{i} lives in city{i}."
                if j == where
                else f"The river {j} is long and wide near town {j + i}.",
            }
            for j in range(PASSAGES)
        ]
        split = "train" if i < 24 else "dpo" if i < 40 else "test"
        rows.append(
            {"id": f"q{i}", "question": f"Who lives in city{i}?", "answers": [f"name{i}"], "ctxs": ctxs, "split": split}
        )
    return rows


def build_data(folder: Path) -> None:
    from retrieval_policies.common.dataset_io import write_dataset_folder
    from retrieval_policies.dynamicrag.data import clean_rows, label_relevance
    from retrieval_policies.dynamicrag.training_examples import behaviour_cloning_examples, generator_examples

    rows = label_relevance(clean_rows(synthetic_rows(), strict=True)[0], "has_answer")
    pool = {split: [r for r in rows if r["split"] == split] for split in ("train", "dpo", "test")}
    sft = behaviour_cloning_examples(pool["train"], max_length=3, seed=0) + generator_examples(pool["train"])
    write_dataset_folder(
        folder,
        {"sft": {"train": sft}, "pool": pool},
        pretty_name="gpu check",
        card_body="synthetic",
        license="mit",
        default_config="sft",
    )


def build_bert(folder: Path, tokenizer) -> None:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
    )
    transformers.BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


class Stages:
    def __init__(self):
        self.seconds: dict[str, float] = {}

    def run(self, name: str, fn):
        started = time.perf_counter()
        result = fn()
        self.seconds[name] = round(time.perf_counter() - started, 2)
        print(json.dumps({"stage": name, "seconds": self.seconds[name]}), flush=True)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--output", help="also write the report as JSON here")
    parser.add_argument(
        "--teach-steps", type=int, default=300, help="untimed SFT steps that teach the tiny model the format"
    )
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: run with --device cpu to test the script itself")
    from trl import DPOConfig, ModelConfig, SFTConfig

    from retrieval_policies import cli
    from retrieval_policies.dynamicrag.rewards import AnswerRewarder, RewardSettings
    from retrieval_policies.models.dynamicrag import DynamicRAGModel

    gpu = args.device == "cuda"
    dtype = "bfloat16" if gpu else "float32"
    placed = {} if gpu else {"device_map": "cpu"}  # on the GPU nothing is given: the default must be CUDA + bf16
    report = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "gpu": torch.cuda.get_device_name(0) if gpu else "none",
    }
    stages = Stages()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tokenizer = build_tokenizer()
        base, bert, data = tmp / "base", tmp / "bert", tmp / "data"
        build_model("llama", tokenizer).save_pretrained(base)
        tokenizer.save_pretrained(base)
        build_bert(bert, tokenizer)
        build_data(data)
        common = dict(
            use_cpu=not gpu,
            bf16=gpu,
            report_to="none",
            save_strategy="no",
            logging_steps=1,
            max_steps=2,
            per_device_train_batch_size=4,
            gradient_accumulation_steps=1,
            learning_rate=1e-4,
            max_length=1024,
            seed=0,
        )

        sft = recipe("sft")
        # A random model's samples are never id lists, so every answer would be the same and no pair would come out:
        # the tiny model first learns the format (untimed), then the timed stage is the recipe's 2 SFT steps from it.
        stages.run(
            "teach the format (not part of the check)",
            lambda: sft.main(
                sft.SFTScriptArguments(dataset_name=str(data), dataset_test_split=None, max_passages=PASSAGES),
                SFTConfig(
                    output_dir=str(tmp / "taught"),
                    completion_only_loss=True,
                    **{
                        **common,
                        "max_steps": args.teach_steps,
                        "learning_rate": 3e-3,
                        "per_device_train_batch_size": 8,
                    },
                ),
                ModelConfig(model_name_or_path=str(base), dtype=dtype),
            ),
        )
        stages.run(
            "sft",
            lambda: sft.main(
                sft.SFTScriptArguments(dataset_name=str(data), dataset_test_split=None, max_passages=PASSAGES),
                SFTConfig(output_dir=str(tmp / "sft"), completion_only_loss=True, **common),
                ModelConfig(model_name_or_path=str(tmp / "taught"), dtype=dtype),
            ),
        )
        loaded = DynamicRAGModel.from_pretrained(tmp / "sft", **placed)
        report["sft_model"] = {"device": str(loaded.device), "dtype": str(loaded.model.dtype)}
        if gpu:
            assert loaded.device.type == "cuda" and loaded.model.dtype == torch.bfloat16, report["sft_model"]
        del loaded

        sample = recipe("sample")
        stages.run(
            "sample",
            lambda: sample.main(
                sample.SamplingArguments(
                    model_name_or_path=str(tmp / "sft"),
                    dataset_name=str(data),
                    dataset_split="dpo",
                    output_file=str(tmp / "traj.jsonl"),
                    num_samples=4,
                    batch_size=8,
                    temperature=1.0,
                    rerank_max_new_tokens=16,
                    answer_max_new_tokens=8,
                    device_map=None if gpu else "cpu",
                )
            ),
        )

        reward_settings = dict(
            bertscore_model=str(bert),
            judge_model=str(tmp / "sft"),
            judge_max_new_tokens=4,
            batch_size=32,
            **({} if gpu else {"bertscore_device_map": "cpu", "judge_device_map": "cpu"}),
        )
        probe = AnswerRewarder(RewardSettings(**reward_settings))
        report["reward_models"] = {
            "bertscore": str(probe.bert_scorer.model.device),
            "judge": str(probe.judge.model.device),
            "judge_dtype": str(probe.judge.model.dtype),
        }
        if gpu:
            assert all(d.startswith("cuda") for d in list(report["reward_models"].values())[:2]), report[
                "reward_models"
            ]
        del probe
        rewards = recipe("rewards")
        stages.run(
            "rewards",
            lambda: rewards.main(
                rewards.RewardArguments(
                    trajectories_file=str(tmp / "traj.jsonl"), output_file=str(tmp / "rewards.jsonl"), **reward_settings
                )
            ),
        )

        pairs = recipe("pairs")
        stages.run(
            "pairs",
            lambda: pairs.main(
                pairs.PairArguments(
                    rewards_file=str(tmp / "rewards.jsonl"), output_dir=str(tmp / "pairs"), generator_questions=4
                )
            ),
        )

        dpo = recipe("dpo")
        stages.run(
            "dpo",
            lambda: dpo.main(
                dpo.DPOScriptArguments(dataset_name=str(tmp / "pairs")),
                DPOConfig(output_dir=str(tmp / "dpo"), beta=0.1, loss_type=["sigmoid"], **common),
                ModelConfig(model_name_or_path=str(tmp / "sft"), dtype=dtype),
            ),
        )

        evaluation = [
            "--quiet",
            "dynamicrag",
            "evaluate",
            "--model",
            str(tmp / "dpo"),
            "--data",
            str(data),
            "--config",
            "pool",
            "--split",
            "test",
            "--rerank-max-new-tokens",
            "16",
            "--answer-max-new-tokens",
            "8",
            "--output",
            str(tmp / "eval.json"),
            *([] if gpu else ["--device", "cpu"]),
        ]
        stages.run("evaluate", lambda: cli.main(evaluation))
        scores = json.loads((tmp / "eval.json").read_text())["scores"]["dynamicrag"]
        report["evaluate"] = {k: scores[k] for k in ("exact_match", "selection_mean_k", "selection_malformed_rate")}
    report["stage_seconds"] = stages.seconds
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    if gpu:
        report["max_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(report, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
