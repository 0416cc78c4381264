"""Demo Space of a DynamicRAG reranker: a question and passages in, the passages it chose (in its order) and the
answer written from them out. The model repo is named in space_config.json (written by the push) or by MODEL_REPO."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import gradio as gr
import pandas as pd

HERE = Path(os.path.abspath(__file__)).parent  # not resolve(): a Hub snapshot links its files to blobs
sys.path.insert(1, str(HERE.parent))  # a checkout keeps space_model.py one folder up; a Space next to this file
import space_model  # noqa: E402

QUESTION = "Who wrote the play Hamlet?"
PASSAGES = (
    "Paris: Paris is the capital and largest city of France.\n"
    "Hamlet: Hamlet is a tragedy written by William Shakespeare around 1600.\n"
    "Globe Theatre: The Globe Theatre in London staged many of Shakespeare's plays."
)


def parse_passages(block: str) -> list[dict]:
    """One passage per line, "Title: text" or just text."""
    passages = []
    for line in (block or "").splitlines():
        if not line.strip():
            continue
        title, sep, text = line.partition(":")
        passages.append(
            {"title": title.strip(), "text": text.strip()}
            if sep and len(title) < 80
            else {"title": "", "text": line.strip()}
        )
    return passages


def rerank_and_answer(question: str, block: str):
    """(the selected passages as a table, the answer) for ``question`` over the passages of ``block``."""
    passages = parse_passages(block)
    if not (question or "").strip() or not passages:
        raise gr.Error("Give a question and at least one passage.")
    out = space_model.model(HERE)(question.strip(), passages)
    table = pd.DataFrame(
        [
            {"order": rank, "id": index + 1, "title": passages[index]["title"], "text": passages[index]["text"]}
            for rank, index in enumerate(out["indices"], start=1)
        ],
        columns=["order", "id", "title", "text"],
    )
    return table, out["answer"]


def check() -> dict:
    """The example through the app's function (what a push verifies): the selected ids and the answer."""
    table, answer = rerank_and_answer(QUESTION, PASSAGES)
    return {"model": space_model.model_repo(HERE), "selected": [int(i) for i in table["id"]], "answer": answer}


def build() -> gr.Blocks:
    with gr.Blocks(title="DynamicRAG reranker") as demo:
        gr.Markdown(
            f"# DynamicRAG: `{space_model.model_name(HERE)}`\nThe model reads the numbered passages, writes the ids worth reading "
            "(as many as it judges useful), then answers from those (arXiv 2505.07233)."
        )
        question = gr.Textbox(label="Question", value=QUESTION, elem_id="question")
        passages = gr.Textbox(label="Passages, one per line (Title: text)", lines=6, value=PASSAGES, elem_id="passages")
        run = gr.Button("Rerank and answer", variant="primary", elem_id="run")
        selected = gr.Dataframe(label="Selected passages, in the model's order", elem_id="selected")
        answer = gr.Textbox(label="Answer", elem_id="answer")
        run.click(rerank_and_answer, [question, passages], [selected, answer])
    return demo


if __name__ == "__main__":
    build().launch()
