"""Stage 4 of DynamicRAG: reranker and generator DPO pairs from the rewarded trajectories (method spec §1.6–§1.7).

    python recipes/dynamicrag/pairs.py --config recipes/dynamicrag/SmolLM2-135M-Instruct/config_pairs.yaml

Writes a dataset folder (config ``pairs``: TRL conversational prompt/chosen/rejected + ``kind``) with a card that
records the counts, the drops and the reward configuration the pairs were ranked with.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from trl import TrlParser

from retrieval_policies.common.dataset_io import format_counts, write_dataset_folder
from retrieval_policies.dynamicrag.pairs import preference_pairs

CARD = """# DynamicRAG preference pairs

Built by `recipes/dynamicrag/pairs.py` (retrieval-policies) from `{source}`: questions whose sampled answers are all
identical or whose rewards are all equal are dropped; the first {generator_questions} qualifying questions give
generator pairs (gold answer vs the first differing sampled answer), the others reranker pairs (highest- vs
lowest-reward list; equal lists dropped{correct_rule}).

Reward configuration:
```json
{reward_config}
```

Counts:
```
{counts}
```
"""


@dataclass
class PairArguments:
    rewards_file: str = "outputs/dynamicrag/rewards.jsonl"
    output_dir: str = "outputs/dynamicrag/pairs"
    generator_questions: int = 10000
    task: str | None = None  # the generator instruction of generator pairs; None: each question's own (its set's)
    require_correct_answer: bool = False  # named deviation: see retrieval_policies.dynamicrag.pairs


ARGUMENTS = (PairArguments,)  # what TrlParser reads the YAML config into


def main(args: PairArguments) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    records = []
    with open(args.rewards_file, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{args.rewards_file}:{number}: not JSON ({err})") from err
    pairs, counts = preference_pairs(
        records,
        generator_questions=args.generator_questions,
        task=args.task,
        require_correct_answer=args.require_correct_answer,
    )
    kept = {k: v for k, v in counts.items() if not k.startswith("dropped")}
    dropped = {k.removeprefix("dropped: "): v for k, v in counts.items() if k.startswith("dropped")}
    summary = format_counts(f"questions: {len(records)}", kept, dropped)
    reward_config = records[0].get("reward_config", {}) if records else {}
    correct_rule = (
        "; deviation `require_correct_answer`: questions where no sampled answer is correct give no reranker pair"
        if args.require_correct_answer
        else ""
    )
    card = CARD.format(
        source=args.rewards_file,
        generator_questions=args.generator_questions,
        correct_rule=correct_rule,
        reward_config=json.dumps(reward_config, indent=2),
        counts=summary,
    )
    folder = write_dataset_folder(
        args.output_dir,
        {"pairs": {"train": pairs}},
        pretty_name="DynamicRAG preference pairs",
        card_body=card,
        license="other",
        tags=["dynamicrag", "dpo"],
        default_config="pairs",
    )
    print(summary)
    print(f"wrote {folder}")


if __name__ == "__main__":
    main(TrlParser(ARGUMENTS).parse_args_and_config()[0])
