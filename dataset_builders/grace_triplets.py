"""Build GRACE supervised training triplets (query, positive, hard negative).

    python dataset_builders/grace_triplets.py --output-dir outputs/data/grace-triplets                 # Hub, else offline
    python dataset_builders/grace_triplets.py --data my_triplets.jsonl --output-dir outputs/data/mine  # query, positive, negative
    python dataset_builders/grace_triplets.py --source hub --hub-dataset sentence-transformers/all-nli --hub-config triplet \\
        --query-column anchor --positive-column positive --negative-column negative
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_data_argument, add_grace_arguments, add_output_arguments, finish, own_data, run  # noqa: E402

from retrieval_policies.grace.data import build_grace_dataset  # noqa: E402

CARD = """Built by `dataset_builders/grace_triplets.py` (retrieval-policies) from **{source}** for GRACE's supervised GRPO
(arXiv 2510.04506): the policy writes rationales for the `positive` (the main prompt, G samples); `query` and
`negative` get one rollout each for the contrastive reward.

- Offline sources: WordNet 3.0 (query = a usage example, positive = the definition of its sense, negative = the
  definition of another sense of the same word; WordNet licence), WordNet definitions (`wordnet-definitions`: query =
  a definition, positive = its synset's words, negative = the words of another sense of one of them) and the Wikipedia extract shipped with gensim
  (query = "article title: section heading", positive = a passage of that section, negative = a passage of another
  section of the same article; CC BY-SA 3.0).
- Rows whose rendered main prompt exceeds {max_prompt_tokens} tokens with the `{backbone}` tokenizer are dropped;
  duplicates are dropped; nothing held out by the local mteb evaluation tasks is included.
- Columns: `id`, `query`, `positive`, `negative`, `source`; splits `train` / `validation` ({validation_share:.0%}, seed {seed}).
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_output_arguments(parser, "outputs/data/grace-triplets")
    parser.add_argument("--source", choices=["auto", "hub", "offline"], default="auto")
    parser.add_argument(
        "--hub-dataset", default="sentence-transformers/all-nli", help="any Hub dataset with the three roles"
    )
    parser.add_argument("--hub-config", default="triplet")
    parser.add_argument("--hub-split", default="train")
    add_data_argument(parser, "the columns query, positive and negative (other names: --query-column ...)")
    parser.add_argument("--query-column", help="the query's column (default: query with --data, anchor on the Hub)")
    parser.add_argument("--positive-column", default="positive", help="the positive's column (default positive)")
    parser.add_argument("--negative-column", default="negative", help="the hard negative's column (default negative)")
    parser.add_argument(
        "--offline-sources",
        default="wordnet,wikipedia",
        help="comma-separated: wordnet, wordnet-definitions, wikipedia",
    )
    add_grace_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    query_column = args.query_column or ("query" if own_data(args) else "anchor")
    columns = {"query": query_column, "positive": args.positive_column, "negative": args.negative_column}
    configs, counts, dropped, source = build_grace_dataset(
        mode="supervised",
        source=args.source,
        backbone=args.backbone,
        hub_dataset=args.hub_dataset,
        hub_config=args.hub_config,
        hub_split=args.hub_split,
        columns=columns,
        offline=tuple(s for s in args.offline_sources.split(",") if s),
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
        pretty_name="GRACE supervised triplets",
        tags=["grace", "embeddings", "contrastive", "triplets"],
        license="other",
        backbone=args.backbone,
        max_prompt_tokens=args.max_prompt_tokens,
        validation_share=args.validation_share,
        seed=args.seed,
    )


if __name__ == "__main__":
    sys.exit(run(main))
