"""DynamicRAG SFT data as TRL conversational prompt/completion records (method spec §1.3, §1.4).

Behaviour-cloning targets teach the reranker when to stop: for each length L in 0..max_length with
|relevant| <= L, the target is the relevant ids (shuffled) then L - |relevant| shuffled irrelevant ids. The prompt
never states L. L = 0 ("None") arises only for questions with no relevant passage; questions with more than
max_length relevant passages are skipped. Caps per length and in total; one seeded RNG makes it reproducible.

Named options, none of them the paper's (each off by default): ``targets="relevant"`` (only L = |relevant|),
``shuffled_orders`` (passages shown in random orders, ids renumbered, so position cannot predict the target),
``empty_targets=False`` (no ``None`` targets), ``restate_query`` (the query again after the passages), and the
warm-up records of ``warmup_examples`` (a first SFT phase before the behaviour-cloning one): ``"curriculum"`` (pools
of 2 passages, one relevant and one not, shuffled) and ``"teacher"`` (the full order of every passage by a free
lexical teacher, the words each passage shares with the question).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from ..models.dynamicrag.prompts_dynamicrag import format_selection, generator_messages, reranker_messages


@dataclass
class BCStats:
    questions: int = 0
    skipped_too_many_relevant: int = 0
    per_length: Counter = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.per_length.values())


def _check_row(row: dict, index: int) -> tuple[str, list, list[int]]:
    for key in ("question", "ctxs"):
        if key not in row:
            raise KeyError(f"row {index}: missing field {key!r}")
    ctxs = row["ctxs"]
    relevant = [i for i, ctx in enumerate(ctxs, start=1) if ctx.get("relevant", ctx.get("has_answer"))]
    return row["question"], ctxs, relevant


BC_TARGETS = ("paper", "relevant")


def _shown(ctxs: list, target: list[int], rng: random.Random) -> tuple[list, list[int]]:
    """The passages in a random order and the target renumbered to it (1-based ids)."""
    order = rng.sample(range(len(ctxs)), len(ctxs))  # order[j] = the original index shown at position j + 1
    position = {original + 1: shown + 1 for shown, original in enumerate(order)}
    return [ctxs[i] for i in order], [position[i] for i in target]


def behaviour_cloning_examples(
    rows: list[dict],
    *,
    max_length: int = 14,
    per_length_cap: int = 2000,
    total_cap: int = 30000,
    seed: int = 42,
    stats: BCStats | None = None,
    targets: str = "paper",
    shuffled_orders: int = 0,
    empty_targets: bool = True,
    restate_query: bool = False,
) -> list[dict]:
    """Reranker BC records from rows with ``question`` and ``ctxs`` (each ctx: title, text, and ``relevant`` or
    ``has_answer``). Questions are visited in a seeded random order so the caps do not favour the file's head.
    ``targets``, ``shuffled_orders``, ``empty_targets``, ``restate_query``: the named options in the module docstring
    (defaults: the paper)."""
    if targets not in BC_TARGETS:
        raise ValueError(f"targets must be one of {BC_TARGETS}, got {targets!r}")
    if shuffled_orders < 0:
        raise ValueError(f"shuffled_orders must be >= 0, got {shuffled_orders}")
    rng = random.Random(seed)
    stats = stats if stats is not None else BCStats()
    order = list(range(len(rows)))
    rng.shuffle(order)
    examples = []
    for index in order:
        question, ctxs, relevant = _check_row(rows[index], index)
        stats.questions += 1
        if len(relevant) > max_length:
            stats.skipped_too_many_relevant += 1
            continue
        if not relevant and not empty_targets:
            continue
        irrelevant = [i for i in range(1, len(ctxs) + 1) if i not in set(relevant)]
        longest = len(relevant) if targets == "relevant" else min(max_length, len(ctxs))
        for length in range(len(relevant), longest + 1):
            target = rng.sample(relevant, len(relevant)) + rng.sample(irrelevant, length - len(relevant))
            for copy in range(max(shuffled_orders, 1)):
                if stats.total >= total_cap:
                    return examples
                if stats.per_length[length] >= per_length_cap:
                    break
                shown, shown_target = _shown(ctxs, target, rng) if shuffled_orders else (ctxs, target)
                examples.append(
                    {
                        "id": f"{rows[index].get('id', index)}-bc{length}"
                        + (f"-order{copy}" if shuffled_orders else ""),
                        "kind": "reranker",
                        "length": length,
                        "prompt": reranker_messages(question, shown, restate_query=restate_query),
                        "completion": [{"role": "assistant", "content": format_selection(shown_target)}],
                    }
                )
                stats.per_length[length] += 1
    return examples


WARMUPS = ("curriculum", "teacher")


def lexical_order(question: str, ctxs: list) -> list[int]:
    """Every passage id (1-based) by how many of the question's content words its title and text share, most
    first; ties keep the shown order. The free teacher of the ``"teacher"`` warm-up; words as GRACE's
    ``shared_terms`` counts them (lowercased, stop words left out)."""
    from ..models.grace.modeling_grace import content_words  # torch-heavy: only when a teacher is asked for

    words = set(content_words(question))
    overlap = [len(words & set(content_words(f"{c.get('title') or ''} {c['text']}"))) for c in ctxs]
    return sorted(range(1, len(ctxs) + 1), key=lambda i: -overlap[i - 1])


def warmup_examples(
    rows: list[dict], kind: str, *, seed: int = 42, copies: int = 1, shuffled: bool = False, restate_query: bool = False
) -> list[dict]:
    """Reranker records for a warm-up SFT phase (``kind`` in ``WARMUPS``, see the module docstring): ``copies``
    records per question (different irrelevant passages, or orders). ``shuffled``: the teacher's pools in random
    orders, ids renumbered (the curriculum's pairs are always shuffled)."""
    if kind not in WARMUPS:
        raise ValueError(f"warm-up must be one of {WARMUPS}, got {kind!r}")
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    rng = random.Random(seed)
    examples = []
    for index, row in enumerate(rows):
        question, ctxs, relevant = _check_row(row, index)
        irrelevant = [i for i in range(1, len(ctxs) + 1) if i not in set(relevant)]
        for copy in range(copies):
            if kind == "curriculum":
                if not relevant or not irrelevant:
                    break
                answer, other = rng.choice(relevant), rng.choice(irrelevant)
                pair = [answer, other] if rng.random() < 0.5 else [other, answer]
                shown, target = [ctxs[i - 1] for i in pair], [pair.index(answer) + 1]
            else:
                shown = _shown(ctxs, [], rng)[0] if shuffled else ctxs
                target = lexical_order(question, shown)
            examples.append(
                {
                    "id": f"{row.get('id', index)}-{kind}{copy}",
                    "kind": "reranker",
                    "length": len(target),
                    "prompt": reranker_messages(question, shown, restate_query=restate_query),
                    "completion": [{"role": "assistant", "content": format_selection(target)}],
                }
            )
    rng.shuffle(examples)
    return examples


def generator_examples(rows: list[dict], *, task: str | None = None) -> list[dict]:
    """Generator SFT records: answer the question from its relevant passages (``Retrieved Content: None`` if none),
    with the row's own instruction (its ``task``, from its source set) unless ``task`` forces one."""
    examples = []
    for index, row in enumerate(rows):
        question, ctxs, relevant = _check_row(row, index)
        answers = row.get("answers") or row.get("answer")
        answers = [answers] if isinstance(answers, str) else list(answers or [])
        if not answers or not str(answers[0]).strip():
            raise ValueError(f"row {index}: no gold answer for the generator example")
        examples.append(
            {
                "id": f"{row.get('id', index)}-gen",
                "kind": "generator",
                "length": -1,  # every SFT record has the same columns; -1: not a reranker target
                "prompt": generator_messages(
                    question, [ctxs[i - 1] for i in relevant], task=task or row.get("task", "short")
                ),
                "completion": [{"role": "assistant", "content": str(answers[0]).strip()}],
            }
        )
    return examples


def rendered_length(tokenizer, record: dict) -> int:
    """Tokens of a prompt/completion record (or a DPO record: its longer side) as the trainer will see it: the chat
    template applied to the whole conversation."""
    completions = [record[k] for k in ("completion", "chosen", "rejected") if k in record]
    lengths = [
        len(
            tokenizer(tokenizer.apply_chat_template(record["prompt"] + c, tokenize=False), add_special_tokens=False)[
                "input_ids"
            ]
        )
        for c in completions
    ]
    return max(lengths)


def over_length(records, tokenizer, max_length: int) -> list[int]:
    """Positions of the records longer than ``max_length`` tokens (which a trainer would truncate)."""
    return [i for i, record in enumerate(records) if rendered_length(tokenizer, record) > max_length]


def refuse_over_length(dataset, tokenizer, max_length: int | None, *, name: str) -> None:
    """Stop before training when an example would be truncated (SFT/DPO trainers cut at max_length silently)."""
    if not max_length:
        return
    bad = over_length(dataset, tokenizer, max_length)
    if bad:
        first = dataset[bad[0]]
        raise ValueError(
            f"{name}: {len(bad)} of {len(dataset)} examples are longer than max_length={max_length} tokens "
            f"(first: row {bad[0]}, id {first.get('id')!r}, {rendered_length(tokenizer, first)} tokens) and "
            "would be truncated: rebuild the data with --tokenizer/--max-seq-length (the builder drops and "
            "counts them) or raise max_length"
        )
