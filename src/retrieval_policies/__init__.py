"""retrieval-policies: LLM retrieval policies (GRACE embedders, DynamicRAG rerankers) trained, published and evaluated on the Hub."""

__version__ = "0.1.0"

# Imported on first use, so that `import retrieval_policies` (and the CLI) does not pay for torch.
_LAZY = {
    "GraceEmbedder": "retrieval_policies.models.grace",
    "GraceConfig": "retrieval_policies.models.grace",
    "DynamicRAGModel": "retrieval_policies.models.dynamicrag",
    "DynamicRAGConfig": "retrieval_policies.models.dynamicrag",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'retrieval_policies' has no attribute {name!r}")


__all__ = ["DynamicRAGConfig", "DynamicRAGModel", "GraceConfig", "GraceEmbedder", "__version__"]
