"""GRACE training data (method spec §6): supervised triplets and unsupervised sentences, from the Hub when online and
from the packaged corpora offline; cleaned, length-filtered with the backbone's tokenizer, de-duplicated, stripped of
everything the local evaluation tasks hold out, and split into train/validation with a seed.

Offline sources:
- WordNet: query = a usage example, positive = the definition of its sense, hard negative = the definition of another
  sense of the same word.
- WordNet definitions ("wordnet-definitions"): query = a definition, positive = its synset's words ("dog, domestic
  dog, Canis familiaris"), hard negative = the words of another sense of one of them. The same shape as the local
  ``LocalWordNetDefinitionRetrieval`` task, on synsets the task never uses (its held-out ids are dropped as always).
- Wikipedia: query = "article title: section heading", positive = a passage of that section, hard negative = a
  passage of another section of the same article.
- Sentences of the Wikipedia extract (unsupervised).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator

ROLES = {"supervised": ("query", "positive", "negative"), "unsupervised": ("text",)}
MAIN_ROLE = {"supervised": "positive", "unsupervised": "text"}  # the text whose rollouts get the policy gradient
SIMCSE_REPO, SIMCSE_FILE = "princeton-nlp/datasets-for-simcse", "wiki1m_for_simcse.txt"


class BadRowError(ValueError):
    pass


def _row_id(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- offline sources
def wordnet_triplets(seed: int = 42) -> Iterator[dict]:
    from ..corpora import WordNet

    wordnet = WordNet()
    rng = random.Random(seed)
    for synset in wordnet.synsets():
        if not synset.examples:
            continue
        others = _other_senses(wordnet, synset)
        if not others:
            continue
        negative = rng.choice(others)
        for example in synset.examples:
            yield {
                "query": example,
                "positive": synset.definition,
                "negative": negative.definition,
                "source": "wordnet",
                "_keys": {"wordnet_synsets": (synset.id, negative.id)},
            }


def _other_senses(wordnet, synset) -> list:
    """Other synsets of the first of ``synset``'s words that has any (its hard negatives)."""
    for lemma in synset.lemmas:
        others = [
            s for s in wordnet.senses(lemma, synset.pos) if s.id != synset.id and s.definition != synset.definition
        ]
        if others:
            return others
    return []


def wordnet_definition_triplets(seed: int = 42) -> Iterator[dict]:
    from ..corpora import WordNet

    wordnet = WordNet()
    rng = random.Random(seed)
    synsets = list(wordnet.synsets())
    rng.shuffle(synsets)  # every part of speech and topic in a --max-rows sample, not the first lexicographer files
    for synset in synsets:
        words = ", ".join(synset.lemmas)
        others = [s for s in _other_senses(wordnet, synset) if ", ".join(s.lemmas) != words]
        if not others:  # a word with one sense, or whose other senses have exactly the same words
            continue
        negative = rng.choice(others)
        yield {
            "query": synset.definition,
            "positive": words,
            "negative": ", ".join(negative.lemmas),
            "source": "wordnet-definitions",
            "_keys": {"wordnet_synsets": (synset.id, negative.id)},
        }


def wikipedia_triplets(seed: int = 42) -> Iterator[dict]:
    from ..corpora import iter_wikipedia_passages

    rng = random.Random(seed)
    by_article: dict[str, list] = {}
    for passage in iter_wikipedia_passages():
        by_article.setdefault(passage.article_id, []).append(passage)
    for passages in by_article.values():
        for passage in passages:
            others = [p for p in passages if p.section != passage.section]
            if not others:
                continue
            negative = rng.choice(others)
            yield {
                "query": f"{passage.title}: {passage.section}",
                "positive": passage.text,
                "negative": negative.text,
                "source": "wikipedia",
                "_keys": {
                    "wikipedia_sections": (
                        f"{passage.article_id}/{passage.section}",
                        f"{negative.article_id}/{negative.section}",
                    ),
                    "wikipedia_passages": (passage.id, negative.id),
                },
            }


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def wikipedia_sentences(min_words: int = 6) -> Iterator[dict]:
    from ..corpora import iter_wikipedia_articles

    for article in iter_wikipedia_articles():
        for section in article.sections:
            for paragraph in section.text.split("\n"):
                for sentence in _SENTENCE_END.split(paragraph.strip()):
                    if len(sentence.split()) >= min_words:
                        yield {
                            "text": sentence.strip(),
                            "source": "wikipedia",
                            "_keys": {"wikipedia_sections": (f"{article.id}/{section.heading}",)},
                        }


# ---------------------------------------------------------------------------------------------- Hub sources
def hub_rows(
    dataset: str,
    *,
    config: str | None = None,
    split: str = "train",
    columns: dict[str, str],
    max_rows: int | None = None,
) -> Iterator[dict]:
    """Rows of a Hub dataset with its columns renamed to GRACE roles (``columns``: role -> column)."""
    from ..common.dataset_io import load_split

    data = load_split(dataset, config, split)
    missing = sorted(c for c in columns.values() if c not in data.column_names)
    if missing:
        raise ValueError(
            f"{dataset}: no column {missing}; columns are {data.column_names} (use the column mapping flags)"
        )
    for i, row in enumerate(data):
        if max_rows is not None and i >= max_rows:
            return
        yield {**{role: row.get(column) for role, column in columns.items()}, "source": dataset}


def simcse_sentences(max_rows: int | None = None) -> Iterator[dict]:
    """The SimCSE wiki1m text file (one sentence per line) from the Hub."""
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(SIMCSE_REPO, SIMCSE_FILE, repo_type="dataset")
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if max_rows is not None and i >= max_rows:
                return
            yield {"text": line.rstrip("\n"), "source": f"{SIMCSE_REPO}/{SIMCSE_FILE}"}


# ---------------------------------------------------------------------------------------------- cleaning
def check_row(row: dict, roles: tuple[str, ...], number: int) -> dict:
    """The row with stripped role texts; BadRowError naming the row and the field otherwise."""
    out = dict(row)
    for role in roles:
        value = row.get(role)
        if value is None:
            raise BadRowError(f"row {number}: missing {role!r}")
        if not isinstance(value, str):
            raise BadRowError(f"row {number}: {role!r} is {type(value).__name__}, not a string")
        if not value.strip():
            raise BadRowError(f"row {number}: empty {role!r}")
        out[role] = value.strip()
    return out


def _reason(err: BadRowError) -> str:
    return str(err).split(": ", 1)[1]


def build_rows(
    rows: Iterable[dict],
    *,
    mode: str,
    tokenizer,
    max_prompt_tokens: int = 1024,
    strict: bool = False,
    heldout: tuple[dict, frozenset] | None = None,
    validation_share: float = 0.05,
    seed: int = 42,
    max_rows: int | None = None,
) -> tuple[dict[str, list[dict]], Counter]:
    """Clean, filter, de-duplicate and split; returns ({"train": [...], "validation": [...]}, drop counts by reason).

    ``heldout`` is (``evaluation.heldout_ids()``, ``evaluation.heldout_texts()``): rows touching either are dropped.
    """
    from ..evaluation.local_tasks import normalize_text
    from ..models.grace.configuration_grace import GraceConfig
    from ..models.grace.modeling_grace import render_prompt

    roles, main = ROLES[mode], MAIN_ROLE[mode]
    system_prompt = GraceConfig().system_prompt
    heldout_ids, heldout_texts = heldout if heldout is not None else ({}, frozenset())
    kept, dropped, seen = [], Counter(), set()
    for number, row in enumerate(rows, start=1):
        if max_rows is not None and len(kept) >= max_rows:
            break
        try:
            row = check_row(row, roles, number)
        except BadRowError as err:
            if strict:
                raise
            dropped[_reason(err)] += 1
            continue
        keys = row.pop("_keys", {})
        if any(value in heldout_ids.get(kind, ()) for kind, values in keys.items() for value in values) or any(
            normalize_text(row[role]) in heldout_texts for role in roles
        ):
            dropped["held out for evaluation"] += 1
            continue
        identity = tuple(row[role] for role in roles)
        if identity in seen:
            dropped["duplicate"] += 1
            continue
        if (
            len(tokenizer(render_prompt(tokenizer, system_prompt, row[main]), add_special_tokens=False)["input_ids"])
            > max_prompt_tokens
        ):
            dropped[f"main prompt ({main}) longer than {max_prompt_tokens} tokens"] += 1
            continue
        seen.add(identity)
        kept.append(
            {"id": _row_id(*identity), **{role: row[role] for role in roles}, "source": str(row.get("source", ""))}
        )
    rng = random.Random(seed)
    rng.shuffle(kept)
    n_validation = int(round(len(kept) * validation_share)) if len(kept) > 1 else 0
    return {"train": kept[n_validation:], "validation": kept[:n_validation]}, dropped


def _interleave(*sources: Iterable[dict]) -> Iterator[dict]:
    """Round-robin over the sources, so a --max-rows sample draws from each."""
    iterators = [iter(s) for s in sources]
    while iterators:
        for it in list(iterators):
            try:
                yield next(it)
            except StopIteration:
                iterators.remove(it)


def build_grace_dataset(
    *,
    mode: str,
    source: str,
    backbone: str,
    hub_dataset: str | None = None,
    hub_config: str | None = None,
    hub_split: str = "train",
    columns: dict[str, str] | None = None,
    offline: tuple[str, ...] = ("wordnet", "wikipedia"),
    max_rows: int | None = None,
    max_prompt_tokens: int = 1024,
    strict: bool = False,
    validation_share: float = 0.05,
    seed: int = 42,
) -> tuple[dict, dict, Counter, str]:
    """(configs for write_dataset_folder, kept counts, drop counts, the source actually used)."""
    import logging

    from transformers import AutoTokenizer

    from ..assets import resolve_model
    from ..evaluation.local_tasks import heldout_ids, heldout_texts

    if mode not in ROLES:
        raise ValueError(f"mode must be one of {sorted(ROLES)}, got {mode!r}")
    rows, used = None, None
    if source in ("auto", "hub"):
        try:
            if mode == "supervised":
                if not hub_dataset:
                    raise ValueError("--hub-dataset is required for supervised Hub data")
                rows = list(
                    hub_rows(
                        hub_dataset,
                        config=hub_config,
                        split=hub_split,
                        columns=columns or {r: r for r in ROLES[mode]},
                        max_rows=max_rows,
                    )
                )
                used = f"hub:{hub_dataset}"
            else:
                rows = (
                    list(simcse_sentences(max_rows))
                    if not hub_dataset
                    else list(
                        hub_rows(
                            hub_dataset,
                            config=hub_config,
                            split=hub_split,
                            columns=columns or {"text": "text"},
                            max_rows=max_rows,
                        )
                    )
                )
                used = f"hub:{hub_dataset or SIMCSE_REPO + '/' + SIMCSE_FILE}"
        except Exception as err:  # noqa: BLE001 - any Hub failure falls back to the packaged corpora under "auto"
            if source == "hub" or isinstance(err, ValueError) and "column" in str(err):
                raise
            logging.getLogger(__name__).info("Hub unavailable (%s): using the packaged corpora", type(err).__name__)
    if rows is None:
        if mode == "supervised":
            makers = {
                "wordnet": wordnet_triplets,
                "wordnet-definitions": wordnet_definition_triplets,
                "wikipedia": wikipedia_triplets,
            }
            unknown = sorted(set(offline) - set(makers))
            if unknown:
                raise ValueError(f"unknown offline source {unknown}; choose from {sorted(makers)}")
            rows = _interleave(*(makers[name](seed) for name in offline))
            used = "+".join(offline)
        else:
            rows, used = wikipedia_sentences(), "wikipedia-sentences"
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(backbone))
    splits, dropped = build_rows(
        rows,
        mode=mode,
        tokenizer=tokenizer,
        max_prompt_tokens=max_prompt_tokens,
        strict=strict,
        heldout=(heldout_ids(), heldout_texts()),
        validation_share=validation_share,
        seed=seed,
        max_rows=max_rows,
    )
    name = "triplets" if mode == "supervised" else "sentences"
    counts = {f"{name}/{split}": len(part) for split, part in splits.items()}
    counts.update(
        {f"{name}/source {s}": n for s, n in Counter(r["source"] for p in splits.values() for r in p).items()}
    )
    return {name: splits}, counts, dropped, used
