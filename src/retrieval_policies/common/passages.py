"""One passage type: ``{"id": str, "title": str, "text": str}`` dicts, whatever the corpus records were.

The corpus readers yield dataclasses (``WikiPassage``, ``WikiArticle``, ``Synset``) or plain strings (the Lee
documents); datasets give rows (dicts, with BEIR's ``_id`` or pyserini's ``contents`` now and then). Every retriever,
the pipeline and ``grace encode`` pass their corpus through :func:`as_passages`, so any of them is accepted and a
record that is none of them gets an error naming its row and the missing field.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

ID_FIELDS = ("id", "_id", "docid", "doc_id")
TEXT_FIELDS = ("text", "contents", "passage", "content")


def _first(record: Mapping, names: tuple[str, ...]):
    return next((record[name] for name in names if name in record and record[name] is not None), None)


def _fields(record) -> Mapping | None:
    """The record's fields as a mapping: a mapping itself, or a dataclass / object's attributes."""
    if isinstance(record, Mapping):
        return record
    fields = {}
    for name in (*ID_FIELDS, *TEXT_FIELDS, "title"):
        try:
            value = getattr(record, name)
        except AttributeError:
            continue
        fields[name] = value
    if "text" not in fields and hasattr(record, "definition"):  # a WordNet Synset: its lemmas are the title
        fields["text"] = record.definition
        fields.setdefault("title", ", ".join(getattr(record, "lemmas", ())))
    return fields or None


def as_passage(record, row: int) -> dict:
    """``record`` (a string, a mapping or a reader's dataclass) as a passage dict; ``row`` is its position, the id of
    a plain string and the row an error names. Extra fields of a mapping are kept."""
    if isinstance(record, str):
        return {"id": str(row), "title": "", "text": record}
    fields = _fields(record)
    if fields is None:
        raise ValueError(
            f"corpus row {row}: a {type(record).__name__} is not a passage: expected a string, a mapping "
            f"or a record with 'id' and 'text' (as the corpus readers yield)"
        )
    text = _first(fields, TEXT_FIELDS)
    if not isinstance(text, str):
        problem = "has no 'text'" if text is None else f"has a {type(text).__name__} 'text', not a string"
        raise ValueError(f"corpus row {row}: the {type(record).__name__} {problem} (fields: {sorted(fields)})")
    passage_id = _first(fields, ID_FIELDS)
    title = fields.get("title") or ""
    if not isinstance(title, str):
        raise ValueError(f"corpus row {row}: 'title' is a {type(title).__name__}, not a string")
    extra = (
        {k: v for k, v in fields.items() if k not in (*ID_FIELDS, *TEXT_FIELDS, "title")}
        if isinstance(record, Mapping)
        else {}
    )
    return {**extra, "id": str(row) if passage_id is None else str(passage_id), "title": title, "text": text}


def as_passages(records: Iterable) -> list[dict]:
    """Every record as a passage dict (:func:`as_passage`); ids must be unique, as a retriever returns them."""
    passages, seen = [], {}
    for row, record in enumerate(records):
        passage = as_passage(record, row)
        if passage["id"] in seen:
            raise ValueError(f"corpus row {row}: id {passage['id']!r} is already the id of row {seen[passage['id']]}")
        seen[passage["id"]] = row
        passages.append(passage)
    return passages


def iter_passage_texts(records: Iterable) -> Iterator[tuple[str, str]]:
    """(id, text) of each record, streamed (``grace encode`` of an in-memory corpus)."""
    for row, record in enumerate(records):
        passage = as_passage(record, row)
        yield passage["id"], passage["text"]
