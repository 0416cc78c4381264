"""Shared infrastructure under both methods: passages, dataset folders, model placement, trainer helpers, training
logs and the local paths a pushed folder remembers. Imports only ``models``, ``assets`` and ``templates``."""
