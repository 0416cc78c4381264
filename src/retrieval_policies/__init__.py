"""retrieval-policies: LLM retrieval policies (GRACE embedders, DynamicRAG rerankers) trained, published and evaluated on the Hub."""

__version__ = "0.1.0"
