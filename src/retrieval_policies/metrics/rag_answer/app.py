"""The Space's app: the metric's Gradio widget (metric_widget.py, copied next to this file by the push)."""

import sys
from pathlib import Path

import evaluate

HERE = Path(__file__).resolve().parent
sys.path.insert(1, str(HERE.parent))  # a checkout of retrieval-policies keeps the widget one folder up
from metric_widget import build  # noqa: E402

if __name__ == "__main__":
    build(evaluate.load(str(HERE)), HERE).launch()
