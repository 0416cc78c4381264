"""Benchmark presets for ``grace evaluate --benchmark``: mteb's own benchmarks by name, and the GRACE paper's two task
lists (method spec §7), resolved through mteb so that a name mteb does not know is an error, never a guess."""

from __future__ import annotations

# The paper's 56 English MTEB tasks = mteb's "MTEB(eng, v1)" benchmark (method spec §7, by category).
PAPER_56 = (
    # retrieval (15)
    "ArguAna",
    "CQADupstackRetrieval",
    "FiQA2018",
    "NFCorpus",
    "SCIDOCS",
    "SciFact",
    "ClimateFEVER",
    "DBPedia",
    "NQ",
    "FEVER",
    "HotpotQA",
    "MSMARCO",
    "QuoraRetrieval",
    "TRECCOVID",
    "Touche2020",
    # reranking (4)
    "AskUbuntuDupQuestions",
    "MindSmallReranking",
    "SciDocsRR",
    "StackOverflowDupQuestions",
    # clustering (11; the authors' script omitted StackExchangeClusteringP2P)
    "ArxivClusteringP2P",
    "ArxivClusteringS2S",
    "BiorxivClusteringP2P",
    "BiorxivClusteringS2S",
    "MedrxivClusteringP2P",
    "MedrxivClusteringS2S",
    "RedditClustering",
    "RedditClusteringP2P",
    "StackExchangeClustering",
    "StackExchangeClusteringP2P",
    "TwentyNewsgroupsClustering",
    # pair classification (3)
    "SprintDuplicateQuestions",
    "TwitterSemEval2015",
    "TwitterURLCorpus",
    # classification (12)
    "AmazonCounterfactualClassification",
    "AmazonPolarityClassification",
    "AmazonReviewsClassification",
    "Banking77Classification",
    "EmotionClassification",
    "ImdbClassification",
    "ToxicConversationsClassification",
    "MTOPDomainClassification",
    "MassiveIntentClassification",
    "MassiveScenarioClassification",
    "MTOPIntentClassification",
    "TweetSentimentExtractionClassification",
    # STS (10)
    "BIOSSES",
    "SICK-R",
    "STS12",
    "STS13",
    "STS14",
    "STS15",
    "STS16",
    "STS17",
    "STSBenchmark",
    "STS22",
    # summarisation (1)
    "SummEval",
)
# The 16-task subset of the paper's ablations (after LLM2Vec).
ABLATION_16 = (
    "SciFact",
    "ArguAna",
    "NFCorpus",
    "StackOverflowDupQuestions",
    "SciDocsRR",
    "BiorxivClusteringS2S",
    "MedrxivClusteringS2S",
    "TwentyNewsgroupsClustering",
    "SprintDuplicateQuestions",
    "Banking77Classification",
    "EmotionClassification",
    "MassiveIntentClassification",
    "STS17",
    "SICK-R",
    "STSBenchmark",
    "SummEval",
)
# Project presets: (the mteb benchmark whose task objects, with their English subsets and splits, are used; names)
PRESETS = {"grace-paper-56": ("MTEB(eng, v1)", PAPER_56), "grace-ablation-16": ("MTEB(eng, v1)", ABLATION_16)}


def resolve_benchmark(name: str) -> list:
    """The task objects of a preset or of an mteb benchmark (``mteb.get_benchmark``); names only, no data loaded."""
    import mteb

    if name in PRESETS:
        source, names = PRESETS[name]
        tasks = {t.metadata.name: t for t in mteb.get_benchmark(source).tasks}
        unknown = [n for n in names if n not in tasks]
        if unknown:
            raise ValueError(f"preset {name}: mteb's {source} has no task {unknown}")
        return [tasks[n] for n in names]
    try:
        return list(mteb.get_benchmark(name).tasks)
    except Exception as err:  # noqa: BLE001 - say what exists instead of mteb's internals
        known = sorted(PRESETS) + sorted(b.name for b in mteb.get_benchmarks())
        raise ValueError(
            f"unknown benchmark {name!r} ({type(err).__name__}); known: {', '.join(known[:12])}, ... "
            f"({len(known)} in all; project presets: {sorted(PRESETS)})"
        ) from None
