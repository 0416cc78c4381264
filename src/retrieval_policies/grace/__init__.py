"""GRACE training: data, contrastive rewards and the GRPO glue (the embedder itself is in models/grace)."""
