"""Adapters to libraries that wrap rerankers and retrievers (each imports its library only when used)."""
