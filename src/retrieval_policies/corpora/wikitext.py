"""Wikitext → plain prose: templates, tables, references, files, categories and formatting removed; link text kept."""

from __future__ import annotations

import html
import re

_DROP_ELEMENTS = (
    "ref",
    "gallery",
    "math",
    "timeline",
    "score",
    "syntaxhighlight",
    "source",
    "pre",
    "imagemap",
    "chem",
    "hiero",
)
_COMMENT_RE = re.compile(r"<!--.*?(-->|$)", re.DOTALL)
_SELF_CLOSING_RE = re.compile(rf"<({'|'.join(_DROP_ELEMENTS)})\b[^>]*/>", re.IGNORECASE)
_ELEMENT_RE = re.compile(rf"<({'|'.join(_DROP_ELEMENTS)})\b[^>]*>.*?(</\1\s*>|$)", re.IGNORECASE | re.DOTALL)
_TAG_RE = re.compile(r"</?[A-Za-z][^<>]*>")
_EXTERNAL_LINK_RE = re.compile(r"\[(?:https?|ftp)://[^\s\]]+\s*([^\]]*)\]")
_BARE_URL_RE = re.compile(r"(?<![\w/])(?:https?|ftp)://\S+")
_QUOTES_RE = re.compile(r"'{2,5}")
_MAGIC_RE = re.compile(r"__[A-Z]+__")
_EMPTY_PARENS_RE = re.compile(r"\(\s*[,;:]?\s*\)")
_SPACE_BEFORE_PUNCT_RE = re.compile(r"\s+([,.;:!?)])")
_SPACES_RE = re.compile(r"[ \t\u00a0]+")
_LIST_MARKER_RE = re.compile(r"^[*#:;]+\s*")
# Templates whose text is prose: {{convert|5|km|...}} → "5 km", {{nowrap|x}} / {{lang|fr|x}} → x.
_CONVERT_RE = re.compile(
    r"\{\{\s*(?:convert|cvt)\s*\|\s*([^{}|]+?)\s*\|\s*([A-Za-z][A-Za-z0-9/]{0,8})\s*(?:\|[^{}]*)?\}\}", re.IGNORECASE
)
_INLINE_TEXT_TEMPLATE_RE = re.compile(r"\{\{\s*(?:nowrap|nobr|small|lang\|[a-z-]+)\s*\|([^{}|]*)\}\}", re.IGNORECASE)
HEADING_RE = re.compile(r"^(={2,6})\s*(.+?)\s*\1\s*$", re.MULTILINE)

# Link namespaces whose targets are not prose (files, categories, interwiki/interlanguage links).
_DROPPED_LINK_PREFIX_RE = re.compile(
    r"^\s*:?\s*(file|image|media|category|wikt|wiktionary|[a-z]{2,3}(-[a-z]+)?)\s*:", re.IGNORECASE
)


def _remove_nested(text: str, opening: str, closing: str) -> str:
    """Drop every balanced ``opening … closing`` span (templates ``{{…}}`` and tables ``{|…|}`` nest)."""
    out, depth, i, start = [], 0, 0, 0
    while i < len(text):
        if text.startswith(opening, i):
            if depth == 0:
                out.append(text[start:i])
            depth += 1
            i += len(opening)
        elif depth and text.startswith(closing, i):
            depth -= 1
            i += len(closing)
            if depth == 0:
                start = i
        else:
            i += 1
    if depth == 0:
        out.append(text[start:])
    return "".join(out)


def _replace_links(text: str) -> str:
    """``[[target|label]]`` → label, ``[[target]]`` → target; file, category and interwiki links (with their nested captions) dropped."""
    out, i = [], 0
    while True:
        begin = text.find("[[", i)
        if begin < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:begin])
        depth, j = 0, begin
        while j < len(text):
            if text.startswith("[[", j):
                depth += 1
                j += 2
            elif text.startswith("]]", j):
                depth -= 1
                j += 2
                if depth == 0:
                    break
            else:
                j += 1
        inner = text[begin + 2 : j - 2] if depth == 0 else text[begin + 2 :]
        if not _DROPPED_LINK_PREFIX_RE.match(inner):
            label = _replace_links(inner).split("|")[-1].strip()
            out.append(label.lstrip(":"))
        i = j


def strip_wiki_markup(text: str) -> str:
    """Plain text of a wikitext fragment, one paragraph per line (list items become their own lines)."""
    text = html.unescape(text)
    text = _COMMENT_RE.sub("", text)
    text = _SELF_CLOSING_RE.sub("", text)
    text = _ELEMENT_RE.sub("", text)
    text = _CONVERT_RE.sub(lambda m: f"{m.group(1)} {m.group(2)}", text)
    text = _INLINE_TEXT_TEMPLATE_RE.sub(lambda m: m.group(1), text)
    text = _remove_nested(text, "{{", "}}")
    text = _remove_nested(text, "{|", "|}")
    text = _replace_links(text)
    text = _EXTERNAL_LINK_RE.sub(lambda m: m.group(1), text)
    text = _BARE_URL_RE.sub("", text)
    text = _TAG_RE.sub("", text)
    text = _QUOTES_RE.sub("", text)
    text = _MAGIC_RE.sub("", text)
    lines = []
    for line in text.splitlines():
        line = _LIST_MARKER_RE.sub("", line.strip())
        line = _EMPTY_PARENS_RE.sub("", line)
        line = _SPACES_RE.sub(" ", line)
        line = _SPACE_BEFORE_PUNCT_RE.sub(r"\1", line).strip()
        if line and any(ch.isalnum() for ch in line):
            lines.append(line)
    return "\n".join(lines)


def clean_heading(heading: str) -> str:
    return " ".join(strip_wiki_markup(heading).split())
