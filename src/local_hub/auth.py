"""Access tokens of the local Hub: a token file of ``token user role [org,org...]`` lines (role ``read`` or
``write``; the organizations the user belongs to, optional).

``hub serve --token-file FILE`` reads it (and re-reads it when it changes, so ``hub token add`` works on a running
server). Tokens are compared in constant time and never logged; the file is written with mode 0600. As on the Hub, a
token acts for its user: it reads public repos and the private repos of its user's namespaces (the user's own and its
organizations'), and a write token writes only there.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)
ROLES = ("read", "write")
_USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_.~+/=-]{16,256}$")


@dataclass(frozen=True)
class Principal:
    """Who a request is from: the token's user, role and organizations. ``everywhere``: the single user of a Hub
    without a token file, who owns every namespace."""

    user: str
    role: str
    orgs: tuple[str, ...] = ()
    everywhere: bool = False

    @property
    def can_write(self) -> bool:
        return self.role == "write"

    def owns(self, namespace: str) -> bool:
        """Whether repos in ``namespace`` are this user's (its own name or one of its organizations)."""
        return self.everywhere or namespace == self.user or namespace in self.orgs

    def line(self, token: str) -> str:
        return " ".join([token, self.user, self.role, *([",".join(self.orgs)] if self.orgs else [])]) + "\n"


class TokenFileError(ValueError):
    pass


def parse_token_file(path: str | os.PathLike) -> dict[str, Principal]:
    """token -> Principal; a bad line is an error naming the file and the line (never the token)."""
    tokens: dict[str, Principal] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) not in (3, 4):
            raise TokenFileError(
                f"{path}, line {number}: expected 'token user read|write [org,org...]', got {len(fields)} fields"
            )
        token, user, role = fields[:3]
        if not _TOKEN_RE.match(token):
            raise TokenFileError(f"{path}, line {number}: the token must be 16-256 URL-safe characters")
        try:
            tokens[token] = _principal(user, role, fields[3].split(",") if len(fields) == 4 else ())
        except TokenFileError as err:
            raise TokenFileError(f"{path}, line {number}: {err}") from None
    return tokens


def _principal(user: str, role: str, orgs) -> Principal:
    for name in (user, *orgs):
        if not _USER_RE.match(name):
            raise TokenFileError(f"invalid user or organization name {name!r}: letters, digits, '.', '_', '-'")
    if role not in ROLES:
        raise TokenFileError(f"role must be 'read' or 'write', got {role!r}")
    return Principal(user, role, tuple(dict.fromkeys(o for o in orgs if o != user)))


def add_token(path: str | os.PathLike, user: str, role: str = "write", orgs: tuple[str, ...] | list[str] = ()) -> str:
    """Add a new random token for ``user`` (a member of ``orgs``) to the token file (rewritten atomically, mode 0600;
    comment lines are not kept) and return it."""
    principal = _principal(user, role, orgs)
    path = Path(path)
    lines = []
    if path.exists():
        lines = [known_principal.line(known) for known, known_principal in parse_token_file(path).items()]
    token = f"hf_local_{secrets.token_urlsafe(24)}"
    _write_token_file(path, [*lines, principal.line(token)])
    return token


def _write_token_file(path: Path, lines: list[str]) -> None:
    """Write the whole file to a temp file (mode 0600) and rename it over ``path``: a reader (the server) sees the
    old file or the new one, never half a line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.writelines(lines)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def revoke_tokens(path: str | os.PathLike, *, user: str | None = None, token: str | None = None) -> int:
    """Remove a token (or every token of ``user``) from the token file, rewritten atomically (mode 0600); returns
    how many were removed. A running server stops accepting them at its next request."""
    if (user is None) == (token is None):
        raise TokenFileError("give a user or a token to revoke, not both")
    path = Path(path)
    kept, removed = [], 0
    for known, principal in parse_token_file(path).items():
        if (token is not None and hmac.compare_digest(known.encode(), token.encode())) or principal.user == user:
            removed += 1
        else:
            kept.append(principal.line(known))
    _write_token_file(path, kept)
    return removed


class Tokens:
    """The token file, re-read when its modification time or size changes."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._tokens: dict[str, Principal] = {}
        self._reload()

    def _reload(self) -> None:
        stat = self.path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._tokens, self._stamp = parse_token_file(self.path), stamp

    def lookup(self, token: str) -> Principal | None:
        with self._lock:
            try:
                self._reload()
            except (OSError, TokenFileError) as err:  # fail closed: a revoked token must never stay valid
                if self._tokens or self._stamp is not None:
                    logger.error("token file unreadable, refusing every token until it is fixed: %s", err)
                self._tokens, self._stamp = {}, None
                return None
            found = None
            for known, principal in self._tokens.items():  # constant time per comparison, every token compared
                if hmac.compare_digest(known.encode(), token.encode()):
                    found = principal
            return found

    def __len__(self) -> int:
        return len(self._tokens)

    def __repr__(self) -> str:
        return f"Tokens(path={str(self.path)!r}, tokens={len(self._tokens)})"
