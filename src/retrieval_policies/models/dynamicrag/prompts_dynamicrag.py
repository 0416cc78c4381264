"""DynamicRAG prompts, output format and the hardened parser: one format for training, sampling, DPO and inference.

Hub-facing: copied into model repos; imports only the standard library. Method spec §2. The published code used
different whitespace, numbering and system prompts in different stages; here every stage calls these functions.

Two prompt profiles: ``"project"`` (the one format every stage of this project trains and runs with) and
``"published"`` (the released checkpoints' inference format, method spec §6, byte for byte: a single newline after
the reranker's query, the generator's indented system prompt, the per-set "remember" line, and selected passages
rendered with their original ids as ``{id}. Title: {title}.``). Use ``"published"`` to run gasolsun/DynamicRAG-8B/-7B.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

RERANKER_SYSTEM_PROMPT = "\n".join(
    [
        "You are an expert at dynamically generating document identifiers to answer a given query.",
        "I will provide you with a set of documents, each uniquely identified by a number within square brackets, e.g., [1], [2], etc.",
        "Your task is to identify and generate only the identifiers of the documents that contain sufficient information to answer the query.",
        "Stop generating identifiers as soon as the selected documents collectively provide enough information to answer the query.",
        'If no documents are required to answer the query, output "None".',
        'Output the identifiers as a comma-separated list, e.g., [1], [2] or "None" if no documents are needed.',
        "Focus solely on providing the identifiers. Do not include any explanations, descriptions, or additional text.",
    ]
)

GENERATOR_SYSTEM_PROMPT = (
    "You are a helpful assistant that answers the query accurately and concisely using the retrieved content. "
    "If the retrieved content is None, answer from your own knowledge. "
    "If you cannot answer the query, say that you cannot answer it."
)

# The task line of the generator's user message, per kind of dataset.
TASK_INSTRUCTIONS = {
    "short": "Please answer the question with a short phrase.",
    "fever": "Please verify the claim: answer with SUPPORTS, REFUTES or NOT ENOUGH INFO.",
    "long": "Please answer the question with a paragraph.",
    "arc": "Please answer the following questions and directly output the answer options.",
}
PROMPT_PROFILES = ("project", "published")

# The released checkpoints' generator system prompt (§6 "variant B"): the rubric's lines without blank lines, every line
# after the first indented by 4 more spaces. Curly quotes and apostrophes as released.
_PUBLISHED_RUBRIC = [
    "You are an intelligent assistant that uses retrieved knowledge to answer user queries accurately and concisely. Follow these rules:",
    "1. **Task**:",
    "   - Use the provided `[Retrieved Content]` to generate responses.",
    "   - If the Retrieved Content is None, you should generate answer based on your own knowledge.",
    "   - If the information is insufficient or you don't know the answer, state, \u201cI cannot fully answer based on the available information. Please provide more details.\u201d",
    "2. **Requirements**:",
    "   - **Accuracy**: Base your answers on the retrieved content.",
    "   - **Conciseness**: Keep answers brief and relevant.",
    "   - **Context Awareness**: Ensure your responses align with the user\u2019s query.",
    "3. **Input Format**:",
    "   - Query: `[User Query]`",
    "   - Retrieved: `[Retrieved Content]`",
    "4. **Output Format**:",
    "   - A structured, clear response tailored to the query.",
    "Always prioritize clarity and reliability.",
]
PUBLISHED_GENERATOR_SYSTEM_PROMPT = "\n".join(
    [_PUBLISHED_RUBRIC[0], *("    " + line for line in _PUBLISHED_RUBRIC[1:])]
)
PUBLISHED_TASK_INSTRUCTIONS = {  # the released inference script's "remember" line per kind of dataset
    "short": "Please answer the question with a short phrase.",
    "fever": "Please answer the question with \u201cSUPPORTS\u201d, \u201cREFUTES\u201d or \u201cNEI\u201d based on what you know.",
    "long": "Please answer the question with a paragraph.",
    "arc": "Please answer the following questions and directly output the answer options.",
}
NONE_OUTPUT = "None"
RESTATED_QUERY_PREFIX = "Query (again): "
_ID_RE = re.compile(r"\[\s*(-?\d+(?:\s*,\s*-?\d+)*)\s*\]")  # [3] and the repairable [3,1,2]


def _title_and_text(passage) -> tuple[str, str]:
    if isinstance(passage, str):
        return "", passage.strip()
    if isinstance(passage, dict) and "text" in passage:
        return str(passage.get("title") or "").strip(), str(passage["text"]).strip()
    raise TypeError(f"a passage must be a string or a dict with 'text' (and 'title'), got {type(passage).__name__}")


def format_passages(passages) -> str:
    """``{i}. Topic: {title}`` newline ``Content: {text}`` for i = 1..N, joined by single newlines."""
    lines = []
    for i, passage in enumerate(passages, start=1):
        title, text = _title_and_text(passage)
        lines.append(f"{i}. Topic: {title}\nContent: {text}")
    return "\n".join(lines)


def _check_profile(profile: str) -> None:
    if profile not in PROMPT_PROFILES:
        raise ValueError(f"unknown prompt profile {profile!r}: expected one of {list(PROMPT_PROFILES)}")


def reranker_messages(question: str, passages, profile: str = "project", restate_query: bool = False) -> list[dict]:
    """The reranker's chat: the query, then the passages numbered 1..N (one newline after the query when published).
    ``restate_query`` (a named prompt option, RankGPT-style; not the paper's): the query again after the passages,
    so the first id is written right after the question rather than ~600 tokens after it."""
    _check_profile(profile)
    gap = "\n" if profile == "published" else "\n\n"
    user = f"Query: {question.strip()}{gap}Retrieved Content:\n{format_passages(passages)}"
    if restate_query:
        user += f"{gap}{RESTATED_QUERY_PREFIX}{question.strip()}"
    return [{"role": "system", "content": RERANKER_SYSTEM_PROMPT}, {"role": "user", "content": user}]


def restates_query(messages: list[dict]) -> bool:
    """Whether a reranker chat was built with ``restate_query`` (its user message ends with the query again)."""
    user = messages[-1]["content"] if messages else ""
    head, _, tail = user.rpartition(RESTATED_QUERY_PREFIX)
    return bool(head) and "\n" not in tail.strip() and user.startswith(f"Query: {tail.strip()}")


def _published_context(passages, ids) -> str:
    ids = list(range(1, len(passages) + 1)) if ids is None else list(ids)
    if len(ids) != len(passages):
        raise ValueError(f"{len(passages)} passages but {len(ids)} ids")
    lines = []
    for i, passage in zip(ids, passages):
        title, text = _title_and_text(passage)
        lines.append(f"{int(i)}. Title: {title}.\nContent: {text}")
    return "Retrieved Content:\n" + "\n".join(lines)


def generator_messages(question: str, passages, task: str = "short", profile: str = "project", ids=None) -> list[dict]:
    """The generator's chat; ``passages`` empty → ``Retrieved Content: None``. ``ids`` are the passages' 1-based
    positions in the reranker's list (the published profile shows them; the project numbers the selection 1..k)."""
    _check_profile(profile)
    instructions = PUBLISHED_TASK_INSTRUCTIONS if profile == "published" else TASK_INSTRUCTIONS
    if task not in instructions:
        raise ValueError(f"unknown task {task!r}: expected one of {sorted(instructions)}")
    if not passages:
        content = f"Retrieved Content: {NONE_OUTPUT}"
    elif profile == "published":
        content = _published_context(passages, ids)
    else:
        content = f"Retrieved Content:\n{format_passages(passages)}"
    if profile == "published":
        user = f"{instructions[task]}\n\nQuery: {question.strip()}\n\n{content}"
        return [{"role": "system", "content": PUBLISHED_GENERATOR_SYSTEM_PROMPT}, {"role": "user", "content": user}]
    user = f"{instructions[task]}\nQuery: {question.strip()}\n\n{content}"
    return [{"role": "system", "content": GENERATOR_SYSTEM_PROMPT}, {"role": "user", "content": user}]


def format_selection(ids) -> str:
    """1-based ids in rank order → ``[3], [1], [7]``; no ids → ``None``."""
    return ", ".join(f"[{int(i)}]" for i in ids) if ids else NONE_OUTPUT


@dataclass(frozen=True)
class ParsedSelection:
    ids: tuple[int, ...]  # 1-based, in order, each once, all within 1..N
    malformed: bool  # the raw output needed repair (or had no ids and did not say None)
    problems: tuple[str, ...]
    out_of_range: tuple[int, ...] = ()  # the ids outside 1..N that were dropped


def parse_selection(output: str, num_passages: int) -> ParsedSelection:
    """Every ``[n]`` in order; out-of-range ids dropped, repeats dropped, "None"/no ids → empty. Never raises."""
    text = output if isinstance(output, str) else ""
    problems = [] if isinstance(output, str) else [f"output is {type(output).__name__}, not str"]
    ids, seen, outside = [], set(), []
    for match in _ID_RE.finditer(text):
        values = [int(v) for v in match.group(1).split(",")]
        if len(values) > 1:
            problems.append(f"several ids in one bracket: {match.group(0)}")
        for value in values:
            if not 1 <= value <= num_passages:
                problems.append(f"id {value} outside 1..{num_passages}")
                outside.append(value)
            elif value in seen:
                problems.append(f"id {value} repeated")
            else:
                seen.add(value)
                ids.append(value)
    stripped = text.strip().strip('"').strip()
    if not ids and stripped != NONE_OUTPUT and not problems:
        problems.append("no ids and not 'None'")
    elif ids and _ID_RE.sub("", text).replace(",", "").strip().rstrip(".;:!").strip():  # "[1], [2]." is well formed
        problems.append("text besides the ids")
    return ParsedSelection(tuple(ids), bool(problems), tuple(problems), tuple(outside))
