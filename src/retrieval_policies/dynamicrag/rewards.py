"""The DynamicRAG answer reward (method spec §3), with the published code's bugs fixed.

R(y) = mean over gold answers a of  Σ_t w_t · term_t(a, y) / Σ_t w_t   over the terms t that are enabled and defined:

- ``em``: bidirectional substring containment after lowercasing and stripping (an empty answer never matches);
- ``rougel``: ROUGE-L F-measure of y against a (``rouge_score``);
- ``bertscore``: BERTScore F1 (greedy cosine matching of contextual token embeddings, no idf, no baseline rescaling)
  with a configurable local encoder;
- ``length``: 1 / (1 + k) with k the number of passages **this** trajectory selected (the published code used the
  number of trajectories, a constant);
- ``judge``: a local causal LM grades the answer 0..100 on the published rubric; the reply is parsed to an integer
  and divided by 100 (the published code returned the string). An unparseable reply drops the term for that answer
  (its weight is renormalised away) and is counted.

A term whose weight is 0 or whose model is not configured is disabled; the remaining weights are renormalised.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .judges import make_answer_judge, parse_judge_score

logger = logging.getLogger(__name__)
TERMS = ("em", "rougel", "bertscore", "length", "judge")


@dataclass
class RewardSettings:
    """Weights (published: 0.2 each) and the local models behind the model-based terms (None disables the term)."""

    weight_em: float = 0.2
    weight_rougel: float = 0.2
    weight_bertscore: float = 0.2
    weight_length: float = 0.2
    weight_judge: float = 0.2
    bertscore_model: str | None = "sentence-transformers/all-MiniLM-L6-v2"
    judge_model: str | None = "HuggingFaceTB/SmolLM2-135M-Instruct"
    judge_max_new_tokens: int = 8
    batch_size: int = 16
    # where the model-based terms run (None: a GPU in bf16 when there is one, else the CPU in fp32); the judge and the
    # BERTScore encoder may sit on other devices than the policy (e.g. "cuda:1")
    bertscore_device_map: str | None = None
    bertscore_dtype: str | None = None
    judge_device_map: str | None = None
    judge_dtype: str | None = None
    # "vllm": the judge generates with vLLM (judge_vllm_* are vllm.LLM's options; judge_device_map places it too)
    judge_backend: str = "hf"
    judge_vllm_gpu_memory_utilization: float = 0.9
    judge_vllm_max_model_length: int | None = 4096
    judge_vllm_tensor_parallel_size: int = 1
    # BERTScore as bert_score computes it: the hidden layer used (None: the last) and the F1 baseline for rescaling
    # ((F - b) / (1 - b); None: no rescaling). The published code: roberta-large, layer 17, rescaled (b = 0.83122575).
    bertscore_num_layers: int | None = None
    bertscore_baseline_f1: float | None = None

    def __post_init__(self):
        for term in TERMS:
            if getattr(self, f"weight_{term}") < 0:
                raise ValueError(f"weight_{term} must be >= 0, got {getattr(self, f'weight_{term}')}")
        if not self.enabled_terms():
            raise ValueError("every reward term is disabled: give at least one a positive weight")
        if self.judge_backend not in ("hf", "vllm"):
            raise ValueError(f"judge_backend must be 'hf' or 'vllm', got {self.judge_backend!r}")
        if self.bertscore_baseline_f1 is not None and not 0 <= self.bertscore_baseline_f1 < 1:
            raise ValueError(f"bertscore_baseline_f1 must be in [0, 1), got {self.bertscore_baseline_f1}")

    def enabled_terms(self) -> list[str]:
        missing = {"bertscore": self.bertscore_model is None, "judge": self.judge_model is None}
        return [t for t in TERMS if getattr(self, f"weight_{t}") > 0 and not missing.get(t, False)]

    def weights(self) -> dict[str, float]:
        """The enabled terms' weights, renormalised to sum to 1."""
        enabled = self.enabled_terms()
        total = sum(getattr(self, f"weight_{t}") for t in enabled)
        return {t: getattr(self, f"weight_{t}") / total for t in enabled}

    def record(self) -> dict:
        """What is written next to every reward: the settings and the weights actually used."""
        return {**asdict(self), "enabled_terms": self.enabled_terms(), "normalised_weights": self.weights()}


# ---------------------------------------------------------------------------------------------- lexical terms
def exact_match(gold: str, answer: str) -> float:
    gold, answer = gold.lower().strip(), answer.lower().strip()
    return float(bool(gold) and bool(answer) and (gold in answer or answer in gold))


_ROUGE = None


def rouge_l(answer: str, gold: str) -> float:
    global _ROUGE
    if _ROUGE is None:
        from rouge_score import rouge_scorer

        _ROUGE = rouge_scorer.RougeScorer(["rougeL"])
    return _ROUGE.score(gold, answer)["rougeL"].fmeasure


def length_term(k: int) -> float:
    return 1.0 / (1.0 + k)


def combine(terms: dict[str, float | None], weights: dict[str, float]) -> float:
    """Weighted mean over the enabled terms that are defined (a None term's weight is renormalised away)."""
    present = {t: w for t, w in weights.items() if terms.get(t) is not None}
    total = sum(present.values())
    return sum(w * terms[t] for t, w in present.items()) / total if total else 0.0


# ---------------------------------------------------------------------------------------------- model terms
class BertScorer:
    """BERTScore F1 with any local encoder (special tokens excluded): the last hidden layer or ``num_layers``' output,
    rescaled with ``baseline_f1`` when given, as bert_score's ``rescale_with_baseline`` does."""

    def __init__(
        self,
        name_or_path: str,
        *,
        batch_size: int = 32,
        device_map=None,
        dtype=None,
        num_layers: int | None = None,
        baseline_f1: float | None = None,
    ):
        from transformers import AutoModel, AutoTokenizer

        from ..assets import resolve_model
        from ..common.placement import load_placed

        folder = resolve_model(name_or_path)
        self.name = name_or_path
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = load_placed(AutoModel, folder, device_map=device_map, dtype=dtype)
        self.batch_size = batch_size
        self.num_layers, self.baseline_f1 = num_layers, baseline_f1

    @torch.no_grad()
    def _embed(self, texts: list[str]) -> list[torch.Tensor]:
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size],
                padding=True,
                truncation=True,
                max_length=512,
                return_tensors="pt",
                return_special_tokens_mask=True,
            )
            special = batch.pop("special_tokens_mask")
            batch = batch.to(self.model.device)
            if self.num_layers is None:
                states = self.model(**batch).last_hidden_state
            else:
                states = self.model(**batch, output_hidden_states=True).hidden_states[self.num_layers]
            hidden = torch.nn.functional.normalize(states.float(), dim=-1).cpu()
            keep = batch["attention_mask"].bool().cpu() & ~special.bool()
            out += [h[m] for h, m in zip(hidden, keep)]
        return out

    def f1(self, candidates: list[str], references: list[str]) -> list[float]:
        if len(candidates) != len(references):
            raise ValueError(f"{len(candidates)} candidates but {len(references)} references")
        unique = sorted(set(candidates) | set(references))
        vectors = dict(zip(unique, self._embed(unique)))
        scores = []
        for cand, ref in zip(candidates, references):
            c, r = vectors[cand], vectors[ref]
            if len(c) == 0 or len(r) == 0:
                scores.append(0.0)
                continue
            sim = c @ r.T
            precision, recall = sim.max(dim=1).values.mean().item(), sim.max(dim=0).values.mean().item()
            f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
            scores.append(f1 if self.baseline_f1 is None else (f1 - self.baseline_f1) / (1 - self.baseline_f1))
        return scores


# ---------------------------------------------------------------------------------------------- scoring
class AnswerRewarder:
    """Scores the trajectories of sampled records (from ``sampling.sample_trajectories``)."""

    def __init__(self, settings: RewardSettings, *, bert_scorer=None, judge=None):
        self.settings = settings
        self.weights = settings.weights()
        self.bert_scorer = (
            bert_scorer
            if bert_scorer is not None or "bertscore" not in self.weights
            else BertScorer(
                settings.bertscore_model,
                batch_size=settings.batch_size,
                device_map=settings.bertscore_device_map,
                dtype=settings.bertscore_dtype,
                num_layers=settings.bertscore_num_layers,
                baseline_f1=settings.bertscore_baseline_f1,
            )
        )
        self.judge = judge if judge is not None or "judge" not in self.weights else make_answer_judge(settings)
        self.counts = Counter()

    def score_records(self, records: list[dict]) -> list[dict]:
        """Each trajectory gains ``reward`` and ``reward_terms`` (per gold answer); returns the records."""
        items = []  # (record index, trajectory index, gold answer)
        for r, record in enumerate(records):
            golds = record["answers"]
            golds = [golds] if isinstance(golds, str) else list(golds)
            if not golds:
                raise ValueError(f"record {record.get('id', r)!r}: no gold answers to reward against")
            for t in range(len(record["trajectories"])):
                items += [(r, t, str(g)) for g in golds]

        def answer(item):
            return str(records[item[0]]["trajectories"][item[1]]["answer"])

        terms = [{} for _ in items]
        for term_values, item in zip(terms, items):
            trajectory = records[item[0]]["trajectories"][item[1]]
            if "em" in self.weights:
                term_values["em"] = exact_match(item[2], answer(item))
            if "rougel" in self.weights:
                term_values["rougel"] = rouge_l(answer(item), item[2])
            if "length" in self.weights:
                term_values["length"] = length_term(len(trajectory["ids"]))
        if "bertscore" in self.weights:
            for values, score in zip(
                terms, self.bert_scorer.f1([item[2] for item in items], [answer(i) for i in items])
            ):
                values["bertscore"] = score
        if "judge" in self.weights:
            replies = self.judge.replies([(records[i[0]]["question"], i[2], answer(i)) for i in items])
            failed = set()
            for item, values, reply in zip(items, terms, replies):
                score = parse_judge_score(reply)
                values["judge"] = None if score is None else score / 100
                self.counts["judge_unparseable" if score is None else "judge_parsed"] += 1
                if score is None:
                    failed.add(item[0])
            # a question's trajectories are ranked on the same terms: one failed judgement drops the term for all
            for item, values in zip(items, terms):
                if item[0] in failed:
                    values["judge"] = None
            self.counts["judge_dropped_questions"] += len(failed)

        per_trajectory: dict[tuple[int, int], list[dict]] = {}
        for item, values in zip(items, terms):
            per_trajectory.setdefault(item[:2], []).append(values)
        for (r, t), values in per_trajectory.items():
            trajectory = records[r]["trajectories"][t]
            trajectory["reward_terms"] = values
            trajectory["reward"] = sum(combine(v, self.weights) for v in values) / len(values)
        self.counts["trajectories"] += len(per_trajectory)
        return records


def reward_file(
    rewarder: AnswerRewarder,
    trajectories: str | os.PathLike,
    output: str | os.PathLike,
    *,
    batch_size: int = 8,
    show_progress_bar: bool = True,
) -> Counter:
    """Reward every record of a trajectories JSONL into ``output`` (one line per question, resumable); each line
    carries the reward configuration it was scored with."""
    from transformers.utils.logging import tqdm

    from .sampling import completed_ids

    source, path = Path(trajectories), Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = completed_ids(path)
    config = rewarder.settings.record()
    todo = []
    with open(source, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if record["id"] not in done:
                    todo.append(record)
            except (json.JSONDecodeError, KeyError) as err:
                raise ValueError(f"{source}:{number}: not a trajectory record ({type(err).__name__}: {err})") from err
    rewarder.counts["skipped_done"] += len(done)
    with open(path, "a", encoding="utf-8") as sink:
        for start in tqdm(range(0, len(todo), batch_size), desc="rewards", disable=not show_progress_bar):
            for record in rewarder.score_records(todo[start : start + batch_size]):
                sink.write(json.dumps({**record, "reward_config": config}, ensure_ascii=False) + "\n")
            sink.flush()
            os.fsync(sink.fileno())
    return rewarder.counts
