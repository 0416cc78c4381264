"""Build the DynamicRAG evaluation sets: online the seven published sets as configs, offline the held-out
Wikipedia cloze test questions (config `wiki_cloze`).

    python dataset_builders/dynamicrag_eval.py --source cloze --output-dir outputs/data/dynamicrag-eval
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_data_argument, add_output_arguments, add_pool_arguments, finish, own_data, pool_options, run  # noqa: E402

from retrieval_policies.dynamicrag.builders import EVAL_POOL, EVAL_SETS, build_eval_dataset  # noqa: E402

CARD = """Built by `dataset_builders/dynamicrag_eval.py` (retrieval-policies) from **{source}**: one config per evaluation
set, split `test`, rows `{{id, question, answers, ctxs}}` (ASQA rows keep `qa_pairs`). Offline, the `wiki_cloze`
config holds the held-out test questions of the Wikipedia cloze QA (never used in training), each with its top
passages from a dense retriever.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_output_arguments(parser, "outputs/data/dynamicrag-eval")
    add_pool_arguments(parser)
    add_data_argument(
        parser, "question, answers (a list of strings) and ctxs (a list of {title, text} passages, first-stage order)"
    )
    parser.add_argument("--hub-dataset", default=EVAL_POOL)
    parser.add_argument("--sets", nargs="+", default=list(EVAL_SETS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if own_data(args) and hasattr(args, "sets"):  # your file is one evaluation set, named by --sets (default custom)
        args.sets = args.sets if args.sets != list(EVAL_SETS) else ["custom"]
    configs, counts, dropped, source = build_eval_dataset(
        source=args.source,
        hub_dataset=args.hub_dataset,
        sets=args.sets,
        max_rows=args.max_rows,
        strict=args.strict,
        **pool_options(args),
    )
    return finish(
        args,
        configs,
        counts,
        dropped,
        source,
        card=CARD,
        pretty_name="DynamicRAG evaluation data",
        tags=["dynamicrag", "retrieval-augmented-generation", "evaluation"],
    )


if __name__ == "__main__":
    sys.exit(run(main))
