"""Readers of real text shipped in installed packages (usable offline): Wikipedia, the Lee benchmark, WordNet."""

from ._paths import CorpusNotAvailableError
from .lee import LeeBenchmark, iter_lee_background, load_lee
from .wikipedia import WikiArticle, WikiPassage, WikiSection, iter_wikipedia_articles, iter_wikipedia_passages
from .wikitext import strip_wiki_markup
from .wordnet import Synset, WordNet, WordNetNotFoundError

__all__ = [
    "CorpusNotAvailableError",
    "LeeBenchmark",
    "Synset",
    "WikiArticle",
    "WikiPassage",
    "WikiSection",
    "WordNet",
    "WordNetNotFoundError",
    "iter_lee_background",
    "iter_wikipedia_articles",
    "iter_wikipedia_passages",
    "load_lee",
    "strip_wiki_markup",
]
