"""Demo Space of a DynamicRAG reranker: a question and passages in, the passages it chose (in its order) and the
answer written from them out. The model repo is named in space_config.json (written by the push) or by MODEL_REPO."""

from __future__ import annotations

import json
import os
from pathlib import Path

import gradio as gr
import pandas as pd
from transformers import AutoModel

HERE = Path(os.path.abspath(__file__)).parent  # not resolve(): a Hub snapshot links its files to blobs
QUESTION = "Who wrote the play Hamlet?"
PASSAGES = ("Paris: Paris is the capital and largest city of France.\n"
            "Hamlet: Hamlet is a tragedy written by William Shakespeare around 1600.\n"
            "Globe Theatre: The Globe Theatre in London staged many of Shakespeare's plays.")
_loaded = {}


def model_repo() -> str:
    if os.environ.get("MODEL_REPO"):
        return os.environ["MODEL_REPO"]
    return json.loads((HERE / "space_config.json").read_text())["model"]


def model_name() -> str:
    """The repo id, or a local folder's name (not the path of the machine serving it)."""
    repo = model_repo()
    return Path(repo).name if Path(repo).is_dir() else repo


def model():
    if "model" not in _loaded:
        _loaded["model"] = AutoModel.from_pretrained(model_repo(), trust_remote_code=True)
    return _loaded["model"]


def parse_passages(block: str) -> list[dict]:
    """One passage per line, "Title: text" or just text."""
    passages = []
    for line in (block or "").splitlines():
        if not line.strip():
            continue
        title, sep, text = line.partition(":")
        passages.append({"title": title.strip(), "text": text.strip()} if sep and len(title) < 80 else {"title": "", "text": line.strip()})
    return passages


def rerank_and_answer(question: str, block: str):
    """(the selected passages as a table, the answer) for ``question`` over the passages of ``block``."""
    passages = parse_passages(block)
    if not (question or "").strip() or not passages:
        raise gr.Error("Give a question and at least one passage.")
    out = model()(question.strip(), passages)
    table = pd.DataFrame([{"order": rank, "id": index + 1, "title": passages[index]["title"], "text": passages[index]["text"]}
                          for rank, index in enumerate(out["indices"], start=1)], columns=["order", "id", "title", "text"])
    return table, out["answer"]


def check() -> dict:
    """The example through the app's function (what a push verifies): the selected ids and the answer."""
    table, answer = rerank_and_answer(QUESTION, PASSAGES)
    return {"model": model_repo(), "selected": [int(i) for i in table["id"]], "answer": answer}


def build() -> gr.Blocks:
    with gr.Blocks(title="DynamicRAG reranker") as demo:
        gr.Markdown(f"# DynamicRAG: `{model_name()}`\nThe model reads the numbered passages, writes the ids worth reading "
                    "(as many as it judges useful), then answers from those (arXiv 2505.07233).")
        question = gr.Textbox(label="Question", value=QUESTION, elem_id="question")
        passages = gr.Textbox(label="Passages, one per line (Title: text)", lines=6, value=PASSAGES, elem_id="passages")
        run = gr.Button("Rerank and answer", variant="primary", elem_id="run")
        selected = gr.Dataframe(label="Selected passages, in the model's order", elem_id="selected")
        answer = gr.Textbox(label="Answer", elem_id="answer")
        run.click(rerank_and_answer, [question, passages], [selected, answer])
    return demo


if __name__ == "__main__":
    build().launch()
