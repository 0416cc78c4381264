"""MkDocs hook: benchmark and evidence tables are rendered from the committed JSON when the site is built."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.docs_tables import render_markers  # noqa: E402


def on_page_markdown(markdown, page, config, files):
    return render_markers(markdown, source=page.file.src_path)
