"""DPO preference pairs from rewarded trajectories (method spec §1.6, §1.7), as TRL conversational records.

Per question, in file order: drop it when its answers are all identical or its rewards are all equal. The first
``generator_questions`` qualifying questions give a generator pair (chosen = the gold answer, rejected = the first
sampled answer that differs from it; the prompt shows the best list's passages) and no reranker pair; every later
one gives a reranker pair (chosen = the highest-reward list, rejected = the lowest-reward list, first on ties),
dropped when the two lists are equal. A generator prompt carries the question's own instruction (its ``task``, from
its source set) unless ``task`` forces one.

``require_correct_answer`` (off by default: a named deviation for small generators) also drops a reranker pair when
no sampled answer of the question is correct (the reward's EM is 0 for every answer): then the answer terms are all
noise and the 1/(1+k) length term alone orders the lists, so the "best" list is simply the shortest and DPO learns
to answer "None". With the paper's 8B generator such questions are rare; with SmolLM2-135M they are most of them.
"""

from __future__ import annotations

from collections import Counter

from ..models.dynamicrag.prompts_dynamicrag import format_selection, generator_messages, reranker_messages
from .rewards import exact_match


def _same(a: str, b: str) -> bool:
    return a.strip().lower() == b.strip().lower()


def _golds(record: dict) -> list[str]:
    return [record["answers"]] if isinstance(record["answers"], str) else list(record["answers"])


def _any_correct(record: dict) -> bool:
    """Judged with the reward's own EM, so it holds whichever reward terms were enabled."""
    return any(exact_match(str(gold), str(t["answer"])) for t in record["trajectories"] for gold in _golds(record))


def preference_pairs(
    records: list[dict],
    *,
    generator_questions: int = 10000,
    task: str | None = None,
    require_correct_answer: bool = False,
) -> tuple[list[dict], Counter]:
    pairs, counts = [], Counter()
    generator_made = 0
    for number, record in enumerate(records, start=1):
        trajectories = record["trajectories"]
        try:
            rewards = [float(t["reward"]) for t in trajectories]
        except KeyError as err:
            raise ValueError(
                f"record {number} ({record.get('id')!r}): a trajectory has no {err} (run the reward stage first)"
            ) from err
        answers = [str(t["answer"]) for t in trajectories]
        if len(trajectories) < 2 or all(_same(a, answers[0]) for a in answers):
            counts["dropped: identical answers"] += 1
            continue
        if max(rewards) == min(rewards):
            counts["dropped: all rewards equal"] += 1
            continue
        best = trajectories[rewards.index(max(rewards))]
        worst = trajectories[rewards.index(min(rewards))]
        ctxs = record["ctxs"]
        if generator_made < generator_questions:
            generator_made += 1
            gold = str(_golds(record)[0]).strip()
            # The answers are not all identical, so at least one differs from the gold.
            rejected = next(a for a in answers if not _same(a, gold))
            pairs.append(
                {
                    "id": f"{record['id']}-gen",
                    "kind": "generator",
                    "prompt": generator_messages(
                        record["question"], [ctxs[i - 1] for i in best["ids"]], task=task or record.get("task", "short")
                    ),
                    "chosen": [{"role": "assistant", "content": gold}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                    "chosen_reward": None,
                    "rejected_reward": None,
                }
            )
            counts["generator pairs"] += 1
            continue
        if require_correct_answer and not _any_correct(record):
            counts["dropped: no correct answer"] += 1
            continue
        if list(best["ids"]) == list(worst["ids"]):
            counts["dropped: equal lists"] += 1
            continue
        pairs.append(
            {
                "id": f"{record['id']}-rerank",
                "kind": "reranker",
                # the prompt the lists were sampled from (older trajectory files have none: the project prompt)
                "prompt": record.get("prompt") or reranker_messages(record["question"], ctxs),
                "chosen": [{"role": "assistant", "content": format_selection(best["ids"])}],
                "rejected": [{"role": "assistant", "content": format_selection(worst["ids"])}],
                "chosen_reward": max(rewards),
                "rejected_reward": min(rewards),
            }
        )
        counts["reranker pairs"] += 1
    return pairs, counts
