"""Build GRACE unsupervised training sentences.

python dataset_builders/grace_sentences.py --output-dir outputs/data/grace-sentences   # SimCSE wiki1m, else offline
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_data_argument, add_grace_arguments, add_output_arguments, finish, own_data, run  # noqa: E402

from retrieval_policies.grace.data import build_grace_dataset  # noqa: E402

CARD = """Built by `dataset_builders/grace_sentences.py` (retrieval-policies) from **{source}** for GRACE's unsupervised GRPO
(arXiv 2510.04506): each sentence gets G rationale samples (the main prompt) and one more view for the reward.

- Online: the SimCSE `wiki1m_for_simcse.txt` file (one Wikipedia sentence per line). Offline: sentences (>= 6 words)
  of the Wikipedia extract shipped with gensim (CC BY-SA 3.0).
- Rows whose rendered prompt exceeds {max_prompt_tokens} tokens with the `{backbone}` tokenizer are dropped;
  duplicates are dropped; sentences of sections held out by the local mteb evaluation tasks are excluded.
- Columns: `id`, `text`, `source`; splits `train` / `validation` ({validation_share:.0%}, seed {seed}).
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_output_arguments(parser, "outputs/data/grace-sentences")
    parser.add_argument("--source", choices=["auto", "hub", "offline"], default="auto")
    parser.add_argument("--hub-dataset", help="a Hub dataset with a text column instead of the SimCSE file")
    parser.add_argument("--hub-config")
    parser.add_argument("--hub-split", default="train")
    add_data_argument(parser, "a text column (--text-column)")
    parser.add_argument("--text-column", default="text", help="the text column (default text)")
    add_grace_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    own_data(args)
    configs, counts, dropped, source = build_grace_dataset(
        mode="unsupervised",
        source=args.source,
        backbone=args.backbone,
        hub_dataset=args.hub_dataset,
        hub_config=args.hub_config,
        hub_split=args.hub_split,
        columns={"text": args.text_column},
        max_rows=args.max_rows,
        max_prompt_tokens=args.max_prompt_tokens,
        strict=args.strict,
        validation_share=args.validation_share,
        seed=args.seed,
    )
    return finish(
        args,
        configs,
        counts,
        dropped,
        source,
        card=CARD,
        pretty_name="GRACE unsupervised sentences",
        tags=["grace", "embeddings", "unsupervised"],
        license="cc-by-sa-3.0" if source.startswith("wikipedia") else "other",
        backbone=args.backbone,
        max_prompt_tokens=args.max_prompt_tokens,
        validation_share=args.validation_share,
        seed=args.seed,
    )


if __name__ == "__main__":
    sys.exit(run(main))
