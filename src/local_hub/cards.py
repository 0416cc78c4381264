"""Card metadata as the Hub returns it: the README's YAML header parsed safely (no aliases, bounded size) and
made JSON-safe, once per README blob."""

from __future__ import annotations

import datetime
import functools
import json
import logging
import math
import re
from pathlib import Path

import yaml

from .storage import (
    Commit,
    HubStorage,
)

logger = logging.getLogger(__name__)


MAX_CARD_YAML_BYTES = 256 * 1024


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without anchors and aliases: a card cannot expand into megabytes ("billion laughs") or loop."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError("aliases are not allowed in a card")
        return super().compose_node(parent, index)


_DROP = object()
JSON_INT_BITS = 13_000  # ~3,900 digits: Python refuses to print ints of more than 4,300 (sys.int_info)


def _json_safe(value):
    """YAML values as the JSON the Hub returns for card data: dates and timestamps as ISO strings, sets as lists,
    keys as strings; non-finite floats, binary and huge integers dropped (anything else would make a 500)."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            safe_key, safe_item = _json_safe(key), _json_safe(item)
            if safe_key is not _DROP and safe_item is not _DROP:
                out[safe_key if isinstance(safe_key, str) else json.dumps(safe_key)] = safe_item
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_json_safe(v) for v in value]
        return [v for v in items if v is not _DROP]
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value if value.bit_length() <= JSON_INT_BITS else _DROP
    if isinstance(value, float):
        return value if math.isfinite(value) else _DROP
    return _DROP  # bytes (!!binary) and anything a custom tag might build


def card_data(storage: HubStorage, commit: Commit) -> dict | None:
    """The README's YAML front matter as JSON-safe data, or None when it is missing, too large or unparseable (as the
    Hub shows such a card: without metadata). Parsed once per README blob (content-addressed)."""
    entry = commit.files.get("README.md")
    if entry is None:
        return None
    return _parse_card(storage.blob_path(entry.sha256), entry.sha256)


@functools.lru_cache(maxsize=256)
def _parse_card(path: Path, sha256: str) -> dict | None:
    with open(path, "rb") as f:  # the front matter is at the start: never read more
        text = f.read(MAX_CARD_YAML_BYTES + 16).decode("utf-8", errors="replace")
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    if not match or len(match.group(1).encode()) > MAX_CARD_YAML_BYTES:
        return None
    try:
        data = yaml.load(match.group(1), Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except (yaml.YAMLError, RecursionError, ValueError):  # ValueError: an int of more digits than Python prints
        return None
    return _json_safe(data) if isinstance(data, dict) else None
