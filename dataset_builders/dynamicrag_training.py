"""Build the DynamicRAG SFT data (reranker behaviour cloning + generator [+ general instructions]) and the labelled
question pool used later for trajectory sampling.

    python dataset_builders/dynamicrag_training.py --source cloze --output-dir outputs/data/dynamicrag-training
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_data_argument, add_output_arguments, add_pool_arguments, finish, own_data, pool_options, run  # noqa: E402

from retrieval_policies.dynamicrag.builders import TRAINING_POOL, build_training_dataset  # noqa: E402

CARD = """Built by `dataset_builders/dynamicrag_training.py` (retrieval-policies) from **{source}**.

- `sft`: TRL conversational prompt/completion records: reranker behaviour-cloning targets (for each length L in
  0..{max_length} with |relevant| <= L: the relevant passage ids, shuffled, then L - |relevant| shuffled irrelevant ids;
  at most {per_length_cap} per length and {total_cap} in total; seed {seed}; {deviations}), generator examples (answer from the
  relevant passages), and general instructions when requested. `kind` says which; `length` is the target's
  number of ids (-1 for non-reranker records).
- `pool`: the questions with their retrieved passages (`ctxs`: id, title, text, score, has_answer, relevant), per
  split; relevance labels from `{labeler}`; `task` is the generator instruction of the row's source set. `dpo` holds
  {dpo_fraction:.0%} of the training questions, held out from `sft` for sampling DPO trajectories; test questions
  appear only here.
- Lengths: {length_rule}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_output_arguments(parser, "outputs/data/dynamicrag-training")
    add_pool_arguments(parser)
    add_data_argument(
        parser, "question, answers (a list of strings) and ctxs (a list of {title, text} passages, first-stage order)"
    )
    parser.add_argument("--hub-dataset", default=TRAINING_POOL)
    parser.add_argument("--hub-split", default="train")
    parser.add_argument("--labeler", default="has_answer", help="has_answer, llm:<model> or monot5[:<name>]")
    parser.add_argument(
        "--max-passages", type=int, help="N: passages per question kept (default: the reranker's max_passages)"
    )
    parser.add_argument("--max-length", type=int, default=14)
    parser.add_argument("--per-length-cap", type=int, default=2000)
    parser.add_argument("--total-cap", type=int, default=30000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--bc-targets",
        choices=["paper", "relevant"],
        default="paper",
        help="paper: every length L from |relevant| to --max-length; relevant (a named deviation): only "
        "L = |relevant|, the relevant ids or None",
    )
    parser.add_argument(
        "--shuffled-orders",
        type=int,
        default=0,
        help="n > 0 (a named deviation): show each behaviour-cloning target's passages in n random orders, "
        "ids renumbered, so position cannot predict the target (default 0: the retriever's order)",
    )
    parser.add_argument(
        "--no-empty-targets",
        action="store_true",
        help="a named deviation: no `None` targets (questions without a relevant passage make no reranker record)",
    )
    parser.add_argument(
        "--restate-query",
        action="store_true",
        help="a named prompt option (RankGPT-style): the query again after the passages; train and run the "
        "model with it (sft.py --restate_query true stores it in the repo)",
    )
    parser.add_argument(
        "--warmup",
        choices=["curriculum", "teacher"],
        help="also write config sft_warmup for a first SFT phase: curriculum (2-passage pools, one relevant, "
        "shuffled) or teacher (the full order of the passages by word overlap with the question)",
    )
    parser.add_argument("--warmup-copies", type=int, default=1, help="warm-up records per question (default 1)")
    parser.add_argument(
        "--general-data", help="mix in general instructions from this Hub dataset (e.g. yahma/alpaca-cleaned)"
    )
    parser.add_argument("--general-count", type=int, default=0)
    parser.add_argument(
        "--dpo-fraction",
        type=float,
        default=0.5,
        help="share of the training questions held out from SFT as pool/dpo (default 0.5)",
    )
    parser.add_argument(
        "--force-has-answer",
        action="store_true",
        help="keep has_answer relevance labels for FEVER/ELI5/ASQA rows (refused by default)",
    )
    parser.add_argument("--tokenizer", help="the backbone's tokenizer: drop (and count) examples over --max-seq-length")
    parser.add_argument("--max-seq-length", type=int, help="the SFT/DPO config's max_length (with --tokenizer)")
    args = parser.parse_args(argv)
    if (args.tokenizer is None) != (args.max_seq_length is None):
        parser.error("--tokenizer and --max-seq-length go together")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    own_data(args)
    configs, counts, dropped, source = build_training_dataset(
        source=args.source,
        hub_dataset=args.hub_dataset,
        hub_split=args.hub_split,
        max_rows=args.max_rows,
        strict=args.strict,
        labeler=args.labeler,
        max_length=args.max_length,
        per_length_cap=args.per_length_cap,
        total_cap=args.total_cap,
        seed=args.seed,
        general_data=args.general_data,
        general_count=args.general_count,
        max_passages=args.max_passages,
        dpo_fraction=args.dpo_fraction,
        force_has_answer=args.force_has_answer,
        tokenizer=args.tokenizer,
        max_seq_length=args.max_seq_length,
        bc_targets=args.bc_targets,
        shuffled_orders=args.shuffled_orders,
        empty_targets=not args.no_empty_targets,
        restate_query=args.restate_query,
        warmup=args.warmup,
        warmup_copies=args.warmup_copies,
        **pool_options(args),
    )
    settings = {
        k: v
        for k, v in vars(args).items()
        if k in ("max_length", "per_length_cap", "total_cap", "seed", "labeler", "dpo_fraction")
    }
    deviations = ["named deviation: only the L = |relevant| target"] if args.bc_targets == "relevant" else []
    deviations += (
        [f"named deviation: each target shown in {args.shuffled_orders} random passage orders, ids renumbered"]
        if args.shuffled_orders
        else []
    )
    deviations += ["named deviation: no None targets"] if args.no_empty_targets else []
    deviations += ["named prompt option: the query restated after the passages"] if args.restate_query else []
    deviations += (
        [f"`sft_warmup`: {args.warmup_copies} {args.warmup} warm-up record(s) per question (a first SFT phase)"]
        if args.warmup
        else []
    )
    settings["deviations"] = "; ".join(deviations) or "the paper's targets, in the retriever's order"
    settings["length_rule"] = (
        f"examples longer than {args.max_seq_length} tokens with the `{args.tokenizer}` tokenizer "
        "were dropped (counted below)"
        if args.tokenizer
        else "not checked against a tokenizer"
    )
    return finish(
        args,
        configs,
        counts,
        dropped,
        source,
        card=CARD,
        pretty_name="DynamicRAG training data",
        tags=["dynamicrag", "reranking", "retrieval-augmented-generation"],
        default_config="sft",
        **settings,
    )


if __name__ == "__main__":
    sys.exit(run(main))
