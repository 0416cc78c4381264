"""A local, loopback-only Hugging Face Hub for offline round trips with the unmodified clients."""

from .client_env import hub_client_env
from .server import LocalHub, make_server
from .storage import HubError, HubStorage

__all__ = ["LocalHub", "HubError", "HubStorage", "hub_client_env", "make_server"]
