"""DynamicRAG data and training helpers (library side; the Hub-facing code is in models/dynamicrag)."""
