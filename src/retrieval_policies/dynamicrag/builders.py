"""The DynamicRAG dataset builders' logic (the scripts in dataset_builders/ only parse arguments and print)."""

from __future__ import annotations

import hashlib
import logging
import random
from collections import Counter

from .cloze_qa import split_of
from .data import check_labeler, clean_rows, cloze_pool, first_stage_rates, label_relevance, make_judge
from .training_examples import BCStats, behaviour_cloning_examples, generator_examples, over_length, warmup_examples

logger = logging.getLogger(__name__)
TRAINING_POOL = "gasolsun/DynamicRAG_Training_Data_150k"
EVAL_POOL = "gasolsun/DynamicRAG-Eval-Data"
EVAL_SETS = ("nq", "triviaqa", "hotpotqa", "2wikimqa", "fever", "eli5", "asqa")


def _hub_rows(repo: str, name: str | None, split: str, max_rows: int | None) -> list[dict]:
    from ..common.dataset_io import load_split

    dataset = load_split(repo, name, split)
    return list(dataset.select(range(min(max_rows, len(dataset))))) if max_rows else list(dataset)


def _offline_encoder(encoder: str):
    from sentence_transformers import SentenceTransformer

    from ..assets import resolve_model

    return SentenceTransformer(str(resolve_model(encoder)), device="cpu")


def question_pool(
    *,
    source: str,
    hub_dataset: str,
    hub_split: str = "train",
    hub_config: str | None = None,
    max_rows: int | None = None,
    encoder: str,
    top_n: int,
    max_articles: int | None,
    cache_dir: str | None,
    strict: bool,
    first_stage: str = "dense",
    query_words: int | None = None,
    passage_words: int | None = None,
) -> tuple[list[dict], Counter, str]:
    """(normalised rows with a ``split``, drop counts, the source actually used). ``first_stage``, ``query_words``,
    ``passage_words``: the offline cloze pool's retriever (``data.cloze_pool``)."""
    if source in ("auto", "hub"):
        try:
            raw = _hub_rows(hub_dataset, hub_config, hub_split, max_rows)
        except Exception as err:  # noqa: BLE001 - any Hub failure
            if source == "hub":
                raise RuntimeError(f"cannot load {hub_dataset} from the Hub: {type(err).__name__}: {err}") from err
            logger.info("Hub unavailable (%s): building the offline Wikipedia cloze pool", type(err).__name__)
        else:
            rows, dropped = clean_rows(raw, strict=strict)
            for row in rows:
                row.setdefault("split", split_of(row["id"]))
            return rows, dropped, f"hub:{hub_dataset}"
    dense = first_stage == "dense"
    raw = cloze_pool(
        encoder=_offline_encoder(encoder) if dense else None,
        encoder_id=encoder if dense else "bm25",
        top_n=top_n,
        max_articles=max_articles,
        cache_dir=cache_dir,
        first_stage=first_stage,
        query_words=query_words,
        passage_words=passage_words,
    )
    raw = raw[:max_rows] if max_rows else raw
    rows, dropped = clean_rows(raw, strict=strict)
    return rows, dropped, "wikipedia-cloze"


def _first_stage_counts(rows: list[dict]) -> dict[str, str]:
    """The retriever's answer rates per split, for the card (how much a reranker can gain)."""
    counts = {}
    for split in ("train", "dpo", "validation", "test"):
        part = [r for r in rows if r["split"] == split]
        counts.update(
            {f"first stage, {split}: {name}": f"{rate:.1%}" for name, rate in first_stage_rates(part).items()}
        )
    return counts


def general_instruction_examples(dataset: str, count: int, seed: int) -> list[dict]:
    """Alpaca-style records (instruction, input, output) as conversational prompt/completion, from the Hub."""
    rows = _hub_rows(dataset, None, "train", None)
    random.Random(seed).shuffle(rows)
    out = []
    for i, row in enumerate(rows[:count]):
        instruction = (row.get("instruction") or "").strip()
        extra = (row.get("input") or "").strip()
        out.append(
            {
                "id": f"general-{i}",
                "kind": "general",
                "length": -1,
                "prompt": [{"role": "user", "content": f"{instruction}\n\n{extra}" if extra else instruction}],
                "completion": [{"role": "assistant", "content": (row.get("output") or "").strip()}],
            }
        )
    return out


def is_dpo_question(question_id: str, fraction: float) -> bool:
    """A fixed share of the training questions, by a hash of the id (stable across builds and row orders)."""
    bucket = int.from_bytes(hashlib.sha256(f"dpo:{question_id}".encode()).digest()[:4], "big") / 2**32
    return bucket < fraction


RERANK_BUDGET = 100  # tokens a reranker list may take (the published max new tokens), reserved when checking a prompt


def drop_over_length(
    configs: dict, tokenizer, max_seq_length: int, dropped: Counter, *, restate_query: bool = False
) -> None:
    """Drop (and count) the SFT records longer than ``max_seq_length`` tokens, and the pool questions whose reranker
    prompt leaves fewer than ``RERANK_BUDGET`` tokens (their DPO examples would be truncated)."""
    from ..models.dynamicrag.prompts_dynamicrag import reranker_messages

    for name in [c for c in configs if c.startswith("sft")]:
        for split, records in configs[name].items():
            bad = set(over_length(records, tokenizer, max_seq_length))
            for i in bad:
                dropped[f"{name}/{split}: {records[i]['kind']} records over {max_seq_length} tokens"] += 1
            configs[name][split] = [r for i, r in enumerate(records) if i not in bad]
    for split, rows in configs["pool"].items():
        if split == "test":
            continue
        probes = [
            {"prompt": reranker_messages(r["question"], r["ctxs"], restate_query=restate_query), "completion": []}
            for r in rows
        ]
        bad = set(over_length(probes, tokenizer, max_seq_length - RERANK_BUDGET))
        if bad:
            dropped[
                f"pool/{split}: questions whose reranker prompt + {RERANK_BUDGET} tokens exceed {max_seq_length}"
            ] += len(bad)
        configs["pool"][split] = [r for i, r in enumerate(rows) if i not in bad]


def build_training_dataset(
    *,
    labeler: str = "has_answer",
    max_length: int = 14,
    per_length_cap: int = 2000,
    total_cap: int = 30000,
    seed: int = 42,
    general_data: str | None = None,
    general_count: int = 0,
    max_passages: int | None = None,
    dpo_fraction: float = 0.5,
    force_has_answer: bool = False,
    tokenizer=None,
    max_seq_length: int | None = None,
    bc_targets: str = "paper",
    shuffled_orders: int = 0,
    empty_targets: bool = True,
    restate_query: bool = False,
    warmup: str | None = None,
    warmup_copies: int = 1,
    **pool_options,
) -> tuple[dict, dict, Counter, str]:
    """Configs ``sft`` (reranker BC + generator [+ general] records per split) and ``pool`` (the labelled questions).

    Every row keeps its first ``max_passages`` (N; default: the reranker's ``DynamicRAGConfig.max_passages``)
    passages, so the behaviour-cloning prompts and targets show the N passages that sampling, DPO and inference show
    (the authors' pool rows carry about 50). ``dpo_fraction`` of the training questions go to ``pool``/dpo, held out
    from SFT for sampling DPO trajectories, as the published pipeline split its data; test questions stay in
    ``pool``/test. With a ``tokenizer`` (the backbone's) and ``max_seq_length`` (the trainer's max_length), examples
    that would not fit are dropped and counted instead of truncated by the trainer. ``has_answer`` labels are refused
    for FEVER, ELI5 and ASQA rows unless ``force_has_answer``. ``bc_targets``, ``shuffled_orders``, ``empty_targets``,
    ``restate_query``: the named options of ``training_examples`` (defaults: the paper's targets and prompt, in the
    retriever's order). ``warmup`` ("curriculum" or "teacher", ``warmup_copies`` records a question): a third config,
    ``sft_warmup``, for a first SFT phase (``training_examples.warmup_examples``).
    """
    from ..models.dynamicrag.configuration_dynamicrag import DynamicRAGConfig

    if not 0 <= dpo_fraction < 1:
        raise ValueError(f"dpo_fraction must be in [0, 1), got {dpo_fraction}")
    if (tokenizer is None) != (max_seq_length is None):
        raise ValueError(
            "give tokenizer and max_seq_length together (the backbone's tokenizer and the trainer's max_length)"
        )
    max_passages = max_passages or DynamicRAGConfig().max_passages
    rows, dropped, source = question_pool(**pool_options)
    check_labeler(rows, labeler, force=force_has_answer)
    cut = sum(len(r["ctxs"]) > max_passages for r in rows)
    rows = [{**r, "ctxs": r["ctxs"][:max_passages]} for r in rows]
    for row in rows:
        if row["split"] == "train" and is_dpo_question(row["id"], dpo_fraction):
            row["split"] = "dpo"
    rows = label_relevance(rows, labeler, judge=make_judge(labeler))
    configs: dict = {"sft": {}, "pool": {}, **({"sft_warmup": {}} if warmup else {})}
    counts: dict = {}
    for split in ("train", "dpo", "validation", "test"):
        part = [r for r in rows if r["split"] == split]
        configs["pool"][split] = part
        if split in ("test", "dpo"):
            continue
        stats = BCStats()
        records = behaviour_cloning_examples(
            part,
            max_length=max_length,
            per_length_cap=per_length_cap,
            total_cap=total_cap,
            seed=seed,
            stats=stats,
            targets=bc_targets,
            shuffled_orders=shuffled_orders,
            empty_targets=empty_targets,
            restate_query=restate_query,
        )
        if warmup:
            configs["sft_warmup"][split] = warmup_examples(
                part,
                warmup,
                seed=seed,
                copies=warmup_copies,
                shuffled=bool(shuffled_orders),
                restate_query=restate_query,
            )
        records += generator_examples(part)
        if split == "train" and general_data and general_count:
            records += general_instruction_examples(general_data, general_count, seed)
        random.Random(seed).shuffle(records)
        configs["sft"][split] = records
        counts[f"sft/{split}"] = len(records)
        counts[f"sft/{split} reranker"] = stats.total
        dropped.update({f"{split}: questions with > {max_length} relevant passages": stats.skipped_too_many_relevant})
    if tokenizer is not None:
        if isinstance(tokenizer, str):
            from transformers import AutoTokenizer

            from ..assets import resolve_model

            tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(tokenizer)))
        drop_over_length(configs, tokenizer, max_seq_length, dropped, restate_query=restate_query)
        counts.update({f"sft/{s}": len(v) for s, v in configs["sft"].items()})
    counts.update({f"sft_warmup/{s}": len(v) for s, v in configs.get("sft_warmup", {}).items()})
    counts.update({f"pool/{s}": len(v) for s, v in configs["pool"].items()})
    counts[f"questions whose passages were cut to the first {max_passages}"] = cut
    counts.update(_first_stage_counts(rows))
    counts.update(
        {
            f"questions with the {t!r} generator instruction": n
            for t, n in sorted(Counter(r.get("task", "short") for r in rows).items())
        }
    )
    return configs, counts, +dropped, source


def build_eval_dataset(
    *,
    source: str,
    hub_dataset: str = EVAL_POOL,
    sets=EVAL_SETS,
    max_rows: int | None = None,
    strict: bool = False,
    **pool_options,
) -> tuple[dict, dict, Counter, str]:
    """Online: the seven evaluation sets as configs (ASQA keeps ``qa_pairs``). Offline: the cloze test questions."""
    if source in ("auto", "hub"):
        try:  # only the download: a bad row under --strict must fail the build, not fall back to offline data
            raw_sets = {name: _hub_rows(hub_dataset, name, "test", max_rows) for name in sets}
        except Exception as err:  # noqa: BLE001
            if source == "hub":
                raise RuntimeError(f"cannot load {hub_dataset} from the Hub: {type(err).__name__}: {err}") from err
            logger.info("Hub unavailable (%s): using the held-out Wikipedia cloze questions", type(err).__name__)
        else:
            configs, dropped = {}, Counter()
            for name, raw in raw_sets.items():
                rows, bad = clean_rows(raw, strict=strict, source=name)
                configs[name] = {"test": rows}
                dropped.update({f"{name}: {k}": v for k, v in bad.items()})
            return configs, {f"{n}/test": len(c["test"]) for n, c in configs.items()}, dropped, f"hub:{hub_dataset}"
    rows, dropped, _ = question_pool(source="cloze", hub_dataset="", max_rows=None, strict=strict, **pool_options)
    test = [r for r in rows if r["split"] == "test"][:max_rows]
    return (
        {"wiki_cloze": {"test": test}},
        {"wiki_cloze/test": len(test), **_first_stage_counts(test)},
        dropped,
        "wikipedia-cloze",
    )
