"""Trajectory sampling with the SFT model (method spec §1.5): per question, ``num_samples`` reranker outputs at
temperature T (0.4), then the generator's greedy answer from each distinct selection, with the row's own instruction (its ``task``).

Questions are processed in batches: every sample of every question of a batch in one generation call (the samples of
a question share one prefill of its prompt), then all answers in one call. Results go to a JSONL file one line per question, flushed as they are written; a re-run skips
the questions already in the file and first drops a torn last line left by an interruption.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from ..models.dynamicrag.prompts_dynamicrag import parse_selection, reranker_messages

logger = logging.getLogger(__name__)


def completed_ids(path: Path) -> set[str]:
    """Ids already sampled; a torn last line (no newline: the process died while writing it) is cut off first."""
    if not path.is_file():
        return set()
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        logger.warning("%s: dropping an incomplete last line left by an interrupted run", path)
        with open(path, "r+b") as f:
            f.truncate(keep)
        data = data[:keep]
    return {json.loads(line)["id"] for line in data.decode("utf-8").splitlines() if line.strip()}


def sample_trajectories(
    model,
    rows: list[dict],
    output: str | os.PathLike,
    *,
    num_samples: int = 8,
    temperature: float = 0.4,
    batch_size: int = 4,
    seed: int = 42,
    show_progress_bar: bool = True,
) -> dict:
    """Append one JSON line per question of ``rows`` not yet in ``output``; returns counts."""
    from transformers.utils.logging import tqdm

    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = completed_ids(path)
    todo = [r for r in rows if r["id"] not in done]
    n = model.dynamicrag_config.max_passages
    counts = {"skipped_done": len(rows) - len(todo), "sampled": 0, "malformed": 0, "outputs": 0, "answer_calls": 0}
    profile, restate = model.dynamicrag_config.prompt_profile, model.dynamicrag_config.restate_query
    with open(path, "a", encoding="utf-8") as sink:
        for start in tqdm(range(0, len(todo), batch_size), desc="sampling", disable=not show_progress_bar):
            batch = todo[start : start + batch_size]
            shown = [r["ctxs"][:n] for r in batch]
            conversations = [reranker_messages(r["question"], ctxs, profile, restate) for r, ctxs in zip(batch, shown)]
            # The batch's own seed (from its ids): the same batch samples the same lists, wherever it falls in a run.
            batch_seed = seed + int(hashlib.sha256("\n".join(r["id"] for r in batch).encode()).hexdigest()[:8], 16)
            outputs = model.generate_texts(
                conversations,
                max_new_tokens=model.dynamicrag_config.rerank_max_new_tokens,
                temperature=temperature,
                seed=batch_seed,
                num_samples=num_samples,
            )
            parsed = [parse_selection(o, len(shown[i // num_samples])) for i, o in enumerate(outputs)]
            # Answers are greedy, so samples of a question that chose the same list share one answer call.
            keys = [(i // num_samples, tuple(p.ids)) for i, p in enumerate(parsed)]
            unique = list(dict.fromkeys(keys))
            unique_answers = model.answer_batch(
                [batch[q]["question"] for q, _ in unique],
                [[shown[q][j - 1] for j in ids] for q, ids in unique],
                task=[batch[q].get("task", "short") for q, _ in unique],
                ids=[list(ids) for _, ids in unique],
            )
            answers = [dict(zip(unique, unique_answers))[key] for key in keys]
            counts["answer_calls"] += len(unique)
            for q, row in enumerate(batch):
                trajectories = [
                    {
                        "output": outputs[i],
                        "ids": list(parsed[i].ids),
                        "malformed": parsed[i].malformed,
                        "answer": answers[i],
                    }
                    for i in range(q * num_samples, (q + 1) * num_samples)
                ]
                record = {
                    "id": row["id"],
                    "question": row["question"],
                    "answers": row["answers"],
                    "ctxs": shown[q],
                    "prompt": conversations[q],  # what the lists were sampled from: DPO's prompt (pairs.py)
                    "task": row.get("task", "short"),
                    "trajectories": trajectories,
                }
                sink.write(json.dumps(record, ensure_ascii=False) + "\n")
                counts["malformed"] += sum(t["malformed"] for t in trajectories)
            sink.flush()
            os.fsync(sink.fileno())
            counts["sampled"] += len(batch)
            counts["outputs"] += len(outputs)
    return counts
