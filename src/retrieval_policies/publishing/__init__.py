"""Publishing to the Hub: the cards rendered from what was trained and measured (``cards``) and
``retrieval-policies push`` (``push``: check a folder, upload it in one commit, load it back)."""
