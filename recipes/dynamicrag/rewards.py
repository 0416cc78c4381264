"""Stage 3 of DynamicRAG: reward every sampled answer (method spec §3).

    python recipes/dynamicrag/rewards.py --config recipes/dynamicrag/SmolLM2-135M-Instruct/config_rewards.yaml

Reads the trajectories JSONL of ``sample.py`` and writes one line per question with ``reward`` and ``reward_terms``
on each trajectory and the reward configuration used (``reward_config``); resumable like sampling. Set a weight to
0, or ``judge_model``/``bertscore_model`` to null, to disable a term; the other weights are renormalised.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from trl import TrlParser

from retrieval_policies.dynamicrag.rewards import AnswerRewarder, RewardSettings, reward_file


@dataclass
class RewardArguments(RewardSettings):
    trajectories_file: str = "outputs/dynamicrag/trajectories.jsonl"
    output_file: str = "outputs/dynamicrag/rewards.jsonl"
    records_per_batch: int = 8


ARGUMENTS = (RewardArguments,)  # what TrlParser reads the YAML config into


def main(args: RewardArguments) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = RewardSettings(**{k: getattr(args, k) for k in RewardSettings.__dataclass_fields__})
    rewarder = AnswerRewarder(settings)
    counts = reward_file(rewarder, args.trajectories_file, args.output_file, batch_size=args.records_per_batch)
    print(f"weights used: {settings.weights()}; {dict(counts)}")


if __name__ == "__main__":
    main(TrlParser(ARGUMENTS).parse_args_and_config()[0])
