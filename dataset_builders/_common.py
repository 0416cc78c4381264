"""Arguments shared by the builders (thin: the logic lives in retrieval_policies)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from retrieval_policies.common.dataset_io import format_counts, push_dataset_folder, write_dataset_folder


def add_output_arguments(parser: argparse.ArgumentParser, default_dir: str) -> None:
    parser.add_argument(
        "--output-dir", default=default_dir, help=f"where the Parquet files and README go (default {default_dir})"
    )
    parser.add_argument(
        "--push-to-hub", metavar="REPO", help="also upload the folder to this dataset repo (one commit)"
    )
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument("--repo-id", help="the Hub repo the card's loading example names (default: --push-to-hub)")
    parser.add_argument(
        "--strict", action="store_true", help="fail on the first bad row (naming it) instead of dropping it"
    )


def add_data_argument(parser: argparse.ArgumentParser, expected: str) -> None:
    """``--data PATH``: the user's own rows (a JSONL/JSON/Parquet/CSV file or a dataset folder) instead of a source."""
    parser.add_argument(
        "--data",
        metavar="PATH",
        help=f"your own data: a JSONL, JSON, Parquet or CSV file or a dataset folder, one row per example with {expected} "
        "(docs/own-data.md has examples)",
    )


def own_data(args: argparse.Namespace) -> bool:
    """With ``--data``: the Hub-source options point at the user's file (checked to exist before anything loads)."""
    if not args.data:
        return False
    if not Path(args.data).exists():
        raise SystemExit(f"error: --data {args.data}: no such file or folder")
    args.source, args.hub_dataset, args.hub_split = "hub", args.data, "train"
    if hasattr(args, "hub_config"):
        args.hub_config = None
    return True


def add_grace_arguments(parser: argparse.ArgumentParser) -> None:
    """What both GRACE builders take: the length filter's tokenizer and limit, the size and the seeded split."""
    parser.add_argument(
        "--backbone", default="HuggingFaceTB/SmolLM2-135M-Instruct", help="tokenizer for the length filter"
    )
    parser.add_argument("--max-prompt-tokens", type=int, default=1024)
    parser.add_argument("--max-rows", type=int, help="keep at most this many rows")
    parser.add_argument("--validation-share", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=42)


def add_pool_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        choices=["auto", "hub", "cloze"],
        default="auto",
        help="hub: the authors' released data; cloze: the offline Wikipedia cloze QA; auto: hub, else cloze",
    )
    parser.add_argument("--max-rows", type=int, help="keep at most this many questions (per set)")
    parser.add_argument(
        "--encoder", default="sentence-transformers/all-MiniLM-L6-v2", help="dense retriever for the cloze pool"
    )
    parser.add_argument("--top-n", type=int, default=20, help="passages retrieved per cloze question (default 20)")
    parser.add_argument(
        "--max-articles", type=int, help="build the cloze pool from the first N Wikipedia articles only"
    )
    parser.add_argument(
        "--first-stage",
        choices=["dense", "bm25"],
        default="dense",
        help="the cloze pool's retriever: dense (--encoder, default) or bm25",
    )
    parser.add_argument(
        "--query-words",
        type=int,
        help="a weak first stage: the retriever sees the article title and "
        "only this many words of the cloze sentence (chosen by a hash of the question id)",
    )
    parser.add_argument(
        "--passage-words", type=int, help="cut the passages at sentence ends into pieces of at most this many words"
    )
    parser.add_argument("--cache-dir", help="where corpus embeddings are kept (default: <output-dir>.cache)")


def pool_options(args: argparse.Namespace) -> dict:
    """The cloze pool's retriever settings from ``add_pool_arguments``, as ``question_pool`` takes them."""
    return {
        "encoder": args.encoder,
        "top_n": args.top_n,
        "max_articles": args.max_articles,
        "cache_dir": args.cache_dir or f"{args.output_dir}.cache",
        "first_stage": args.first_stage,
        "query_words": args.query_words,
        "passage_words": args.passage_words,
    }


def finish(
    args: argparse.Namespace,
    configs: dict,
    counts: dict,
    dropped: dict,
    source: str,
    *,
    card: str,
    pretty_name: str,
    tags: list[str],
    default_config: str | None = None,
    license: str | None = None,
    **card_fields,
) -> int:
    """Fill the card and append the counts and the command, write the folder, print the counts, push when asked."""
    summary = format_counts(f"source: {source}", counts, dropped)
    command = "python " + " ".join(sys.argv)
    body = card.format(source=source, **card_fields) + f"\nCounts:\n```\n{summary}\n```\nCommand: `{command}`\n"
    folder = write_dataset_folder(
        args.output_dir,
        configs,
        pretty_name=pretty_name,
        card_body=body,
        license=license or ("cc-by-sa-3.0" if source == "wikipedia-cloze" else "other"),
        tags=tags,
        default_config=default_config,
        repo_id=args.push_to_hub or args.repo_id,
    )
    print(summary)
    print(f"wrote {folder}")
    if args.push_to_hub:
        print(f"pushed {push_dataset_folder(folder, args.push_to_hub, private=args.private)}")
    return 0


def run(main) -> int:
    """A builder's entry point: bad input (a missing file or column, a bad row under --strict, a source that cannot
    be loaded) is one line and exit status 2, not a traceback; RETRIEVAL_POLICIES_TRACEBACK=1 shows it."""
    import os
    import sys

    try:
        return main()
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        if os.environ.get("RETRIEVAL_POLICIES_TRACEBACK"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
