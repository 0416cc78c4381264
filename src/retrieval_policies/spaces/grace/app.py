"""Demo Space of a GRACE embedder: texts in, their cosine similarity matrix and the rationale behind each embedding
out. The model repo is named in space_config.json (written by the push) or by MODEL_REPO."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import gradio as gr
import pandas as pd

HERE = Path(os.path.abspath(__file__)).parent  # not resolve(): a Hub snapshot links its files to blobs
sys.path.insert(1, str(HERE.parent))  # a checkout keeps space_model.py one folder up; a Space next to this file
import space_model  # noqa: E402

EXAMPLE = "A dog barked at the mailman all morning.\nThe postman was barked at by a dog for hours.\nStock prices fell sharply on Monday."


def embed(text_block: str, max_new_tokens: float = 32):
    """(similarity matrix, one "#i: rationale" line per text) for the texts of ``text_block``, one per line."""
    texts = [line.strip() for line in (text_block or "").splitlines() if line.strip()]
    if len(texts) < 2:
        raise gr.Error("Give at least two texts, one per line.")
    vectors, rationales = space_model.model(HERE).encode(
        texts, temperature=0.0, max_new_tokens=int(max_new_tokens), return_rationales=True
    )
    names = [f"#{i}" for i in range(1, len(texts) + 1)]
    matrix = pd.DataFrame((vectors @ vectors.T).astype("float64").round(3), columns=names)
    matrix.insert(0, "text", names)
    lines = (f"{name}: {' '.join(rationale.split())}" for name, rationale in zip(names, rationales))  # one line each
    return matrix, "\n".join(lines)


def explain(text_block: str, max_new_tokens: float = 32):
    """Why each other text matches the first (the query), best first: the score, both rationales side by side and the
    words they share (GraceEmbedder.explain)."""
    texts = [line.strip() for line in (text_block or "").splitlines() if line.strip()]
    if len(texts) < 2:
        raise gr.Error("Give a query on the first line and at least one text after it.")
    hits = space_model.model(HERE).explain(texts[0], texts[1:], temperature=0.0, max_new_tokens=int(max_new_tokens))
    return pd.DataFrame(
        [
            {
                "rank": h["rank"],
                "text": f"#{h['index'] + 2}",
                "score": round(h["score"], 3),
                "query's rationale": h["query_rationale"],
                "text's rationale": h["document_rationale"],
                "shared": ", ".join(h["shared"]),
            }
            for h in hits
        ]
    )


def check() -> dict:
    """The example through the app's function (what a push verifies): the matrix's shape and the rationales."""
    matrix, rationales = embed(EXAMPLE, 8)
    return {
        "model": space_model.model_repo(HERE),
        "matrix": list(matrix.shape),
        "rationales": len(rationales.splitlines()),
        "explained": len(explain(EXAMPLE, 8)),
    }


def build() -> gr.Blocks:
    with gr.Blocks(title="GRACE embedder") as demo:
        gr.Markdown(
            f"# GRACE: `{space_model.model_name(HERE)}`\nThe model writes a rationale about each text; the mean-pooled hidden "
            "states of text and rationale are its embedding (arXiv 2510.04506). Greedy decoding."
        )
        texts = gr.Textbox(label="Texts, one per line", lines=5, value=EXAMPLE, elem_id="texts")
        tokens = gr.Slider(4, 128, value=32, step=1, label="Rationale tokens at most", elem_id="tokens")
        run = gr.Button("Embed", variant="primary", elem_id="run")
        matrix = gr.Dataframe(label="Cosine similarity", elem_id="matrix")
        rationales = gr.Textbox(label="Rationales", lines=5, elem_id="rationales")
        run.click(embed, [texts, tokens], [matrix, rationales])
        why = gr.Button("Why does each text match the first?", elem_id="why")
        hits = gr.Dataframe(label="The first text as the query: score, both rationales, shared words", elem_id="hits")
        why.click(explain, [texts, tokens], [hits])
    return demo


if __name__ == "__main__":
    build().launch()
