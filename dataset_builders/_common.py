"""Arguments shared by the builders (thin: the logic lives in retrieval_policies)."""

from __future__ import annotations

import argparse


def add_output_arguments(parser: argparse.ArgumentParser, default_dir: str) -> None:
    parser.add_argument("--output-dir", default=default_dir, help=f"where the Parquet files and README go (default {default_dir})")
    parser.add_argument("--push-to-hub", metavar="REPO", help="also upload the folder to this dataset repo (one commit)")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument("--strict", action="store_true", help="fail on the first bad row (naming it) instead of dropping it")


def add_pool_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", choices=["auto", "hub", "cloze"], default="auto",
                        help="hub: the authors' released data; cloze: the offline Wikipedia cloze QA; auto: hub, else cloze")
    parser.add_argument("--max-rows", type=int, help="keep at most this many questions (per set)")
    parser.add_argument("--encoder", default="sentence-transformers/all-MiniLM-L6-v2", help="dense retriever for the cloze pool")
    parser.add_argument("--top-n", type=int, default=20, help="passages retrieved per cloze question (default 20)")
    parser.add_argument("--max-articles", type=int, help="build the cloze pool from the first N Wikipedia articles only")
    parser.add_argument("--cache-dir", help="where corpus embeddings are kept (default: <output-dir>.cache)")
