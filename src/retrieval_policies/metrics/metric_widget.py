"""The metric Spaces' Gradio widget: one JSON field per input of the metric (and one for its other keyword arguments), its result as JSON.

evaluate's own ``launch_gradio_widget`` builds its form with ``gr.inputs`` / ``gr.outputs``, which Gradio removed
in 4.0, so on any current Gradio a metric Space built with it fails at start-up. This one uses today's components;
the push copies it next to each metric's app.py (and this checkout's app.py files find it here)."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import yaml


def _example(folder: Path) -> dict:
    """The first example of the metric's card.yaml (what the form starts with)."""
    card = folder / "card.yaml"
    examples = yaml.safe_load(card.read_text()).get("examples", []) if card.is_file() else []
    return examples[0]["kwargs"] if examples else {}


def build(metric, folder: str | Path) -> gr.Blocks:
    folder = Path(folder)
    features = metric.features[0] if isinstance(metric.features, list) else metric.features
    example = _example(folder)

    def compute(*values):
        kwargs = {}
        for name, value in zip([*features, "other arguments"], values):
            try:
                parsed = json.loads(value or "{}")
            except json.JSONDecodeError as err:
                raise gr.Error(f'{name}: not JSON ({err.msg}); give a JSON list, e.g. ["an answer"]') from None
            if name == "other arguments":
                if not isinstance(parsed, dict):
                    raise gr.Error('other arguments: give a JSON object, e.g. {"k_values": [1, 5]}')
                kwargs.update(parsed)
            else:
                kwargs[name] = parsed
        return json.dumps(metric.compute(**kwargs), indent=2, sort_keys=True)

    with gr.Blocks(title=f"Metric: {metric.name}") as demo:
        gr.Markdown(
            f"# Metric: {metric.name}\n{metric.info.description}\n\nEach input is a JSON list, one entry per example."
        )
        fields = [
            gr.Textbox(label=name, value=json.dumps(example.get(name, [])), elem_id=f"input-{name}")
            for name in features
        ]
        others = {k: v for k, v in example.items() if k not in features}  # compute's keyword arguments (k_values, ...)
        fields.append(
            gr.Textbox(label="other arguments (JSON object)", value=json.dumps(others), elem_id="input-options")
        )
        run = gr.Button("Compute", variant="primary", elem_id="run")
        result = gr.Textbox(label=metric.name, lines=8, elem_id="result")
        run.click(compute, fields, result)
    return demo
