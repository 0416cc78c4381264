"""Where the packaged corpora live on disk (found without importing the packages that ship them)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


class CorpusNotAvailableError(FileNotFoundError):
    """A packaged corpus whose package (or system package) is not installed."""


def gensim_test_data(filename: str) -> Path:
    """A file of gensim's test data folder; gensim itself is not imported (it pulls SciPy and compiled extensions)."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise CorpusNotAvailableError(
            f"{filename} ships in the gensim wheel, which is not installed: pip install gensim==4.4.0"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "test" / "test_data" / filename
    if not path.is_file():
        raise CorpusNotAvailableError(
            f"gensim is installed but {path} is missing: reinstall gensim==4.4.0 (the wheel ships it)"
        )
    return path
