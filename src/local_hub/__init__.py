"""A local Hugging Face Hub: the Hub's HTTP API for the unmodified clients, over repos stored as files, with
per-user tokens. Pointing ``HF_ENDPOINT`` at it is how the Hub's own client suites test against a Hub.

The public surface: :class:`LocalHub` (a server in a thread), :func:`make_server` (``retrieval-policies hub serve``),
the token file (:func:`add_token`, :func:`revoke_tokens`) and :func:`hub_client_env` (a client process's
environment). Installed with the ``[hub]`` extra.
"""

from .app import LocalHub, make_server
from .auth import add_token, revoke_tokens
from .client_env import hub_client_env
from .storage import HubError, HubStorage

__all__ = ["LocalHub", "HubError", "HubStorage", "add_token", "hub_client_env", "make_server", "revoke_tokens"]
