"""RAG answer quality: SQuAD exact match and token F1, answer match, ROUGE-L, FEVER label accuracy, ASQA str-EM."""

from __future__ import annotations

import re
import string
from collections import Counter

import datasets
import evaluate
from rouge_score import rouge_scorer

_DESCRIPTION = """Answer metrics for retrieval-augmented generation (DynamicRAG evaluation, method spec §5).
All scores are fractions in [0, 1], averaged over questions; each question may have several gold answers (the best
one counts). Configs: `default` (exact_match, f1, match, rougeL), `fever` (label_accuracy), `asqa` (str_em)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: generated answers, one string per question.
    references: `default` and `fever`: the gold answers of each question (a list of strings; an empty list means
        the question has no answer, so only an empty prediction is exact). `asqa`: the qa-pairs of each question,
        each a list of acceptable short answers.
    match_direction (`default`): "gold_in_prediction" (standard: some gold answer appears in the prediction) or
        "prediction_in_gold" (the published DynamicRAG variant, reversed; it scores an empty prediction as 1).
Returns:
    default: {"exact_match", "f1", "match", "rougeL"}; fever: {"label_accuracy"}; asqa: {"str_em"}.
Examples:
    >>> from retrieval_policies.metrics import metric_path
    >>> metric = evaluate.load(metric_path("rag_answer"))  # or the Space's repo id
    >>> metric.compute(predictions=["The Eiffel Tower"], references=[["Eiffel Tower", "la tour Eiffel"]])
    {'exact_match': 1.0, 'f1': 1.0, 'match': 1.0, 'rougeL': 1.0}
"""

_CITATION = """@article{sun2025dynamicrag, title={DynamicRAG: Leveraging Outputs of Large Language Model as Feedback for Dynamic Reranking in Retrieval-Augmented Generation}, author={Sun, Jiashuo and others}, journal={arXiv:2505.07233}, year={2025}}"""

FEVER_LABELS = {
    "supports": "SUPPORTS",
    "refutes": "REFUTES",
    "not enough info": "NOT ENOUGH INFO",
    "nei": "NOT ENOUGH INFO",
}


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def answer_match(prediction: str, gold: str, direction: str = "gold_in_prediction") -> float:
    pred, ref = normalize_answer(prediction), normalize_answer(gold)
    if direction == "gold_in_prediction":
        return float(bool(ref) and ref in pred)
    if direction == "prediction_in_gold":
        return float(pred in ref)
    raise ValueError(f"match_direction must be 'gold_in_prediction' or 'prediction_in_gold', got {direction!r}")


def fever_label(text: str) -> str | None:
    """The first FEVER label named in ``text`` (SUPPORTS / REFUTES / NOT ENOUGH INFO), or None."""
    lowered = " ".join(text.lower().replace("_", " ").split())
    found = [(lowered.find(key), label) for key, label in FEVER_LABELS.items() if re.search(rf"\b{key}\b", lowered)]
    return min(found)[1] if found else None


class RagAnswer(evaluate.Metric):
    def _info(self):
        if self.config_name == "asqa":
            references = datasets.Sequence(datasets.Sequence(datasets.Value("string")))
        else:
            references = datasets.Sequence(datasets.Value("string"))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"), "references": references}),
        )

    def _compute(self, predictions, references, match_direction: str = "gold_in_prediction"):
        if not predictions:
            raise ValueError("no predictions to score")
        if self.config_name == "fever":
            hits = [
                float(fever_label(p) is not None and fever_label(p) in {fever_label(r) for r in refs})
                for p, refs in zip(predictions, references)
            ]
            return {"label_accuracy": sum(hits) / len(hits)}
        if self.config_name == "asqa":
            scores = []
            for prediction, qa_pairs in zip(predictions, references):
                pred = normalize_answer(prediction)
                covered = [
                    any(normalize_answer(a) and normalize_answer(a) in pred for a in answers) for answers in qa_pairs
                ]
                scores.append(sum(covered) / len(covered) if covered else 0.0)
            return {"str_em": sum(scores) / len(scores)}
        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        totals = {"exact_match": 0.0, "f1": 0.0, "match": 0.0, "rougeL": 0.0}
        for prediction, golds in zip(predictions, references):
            golds = list(golds) or [""]
            totals["exact_match"] += max(exact_match(prediction, g) for g in golds)
            totals["f1"] += max(token_f1(prediction, g) for g in golds)
            totals["match"] += max(answer_match(prediction, g, match_direction) for g in golds)
            totals["rougeL"] += max(
                scorer.score(g, prediction)["rougeL"].fmeasure
                if g.strip() and prediction.strip()
                else float(not g.strip() and not prediction.strip())
                for g in golds
            )
        return {name: value / len(predictions) for name, value in totals.items()}
