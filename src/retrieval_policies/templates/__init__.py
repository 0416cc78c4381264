"""The Jinja card templates shipped in the package, for ``cards`` (models, metric and demo Spaces) and
``dataset_io`` (datasets); ``RETRIEVAL_POLICIES_CARD_TEMPLATES`` names a folder of one's own instead."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def template_dir() -> Path:
    override = os.environ.get("RETRIEVAL_POLICIES_CARD_TEMPLATES")
    folder = Path(override) if override else Path(str(resources.files(__name__)))
    if not (folder / "grace.md").is_file():
        where = "RETRIEVAL_POLICIES_CARD_TEMPLATES" if override else "the installed package (reinstall it)"
        raise FileNotFoundError(f"card templates not found in {folder}, from {where}")
    return folder


def render_card(card_class, card_data, template: str, **context):
    """``card_class.from_template`` (``huggingface_hub``'s ModelCard / DatasetCard / RepoCard) of a template here."""
    return card_class.from_template(card_data, template_path=str(template_dir() / template), **context)
