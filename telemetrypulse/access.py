"""Scoped API keys (SPEC §10): parsing `API_KEYS` / `API_KEY`, and which key a request presents.

Pure logic, no web framework: the API's dependencies (api/auth.py) ask a `KeyRing` two questions —
is this scope protected at all, and which configured key (if any) is the presented one.

Secrets are kept only as SHA-256 digests, and a presented key is compared with every configured digest
in constant time, with no early exit, so neither the answer time nor an exception reveals how much of a
guess was right. No error message built here ever contains a secret.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from enum import StrEnum


class Scope(StrEnum):
    read = "read"
    ingest = "ingest"
    operate = "operate"
    admin = "admin"


KEY_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Printable ASCII without spaces or commas: what an HTTP header carries safely and the list format allows.
KEY_SECRET = re.compile(r"[!-+\--~]+")
MIN_SECRET_LENGTH = 8
LEGACY_KEY_NAME = "API_KEY"
FORMAT = "name:secret:scope[+scope…]"


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    scopes: frozenset[Scope]
    digest: bytes

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes or Scope.admin in self.scopes

    def __repr__(self) -> str:  # never the digest either: a log line gets the name and scopes only
        return f"ApiKey({self.name!r}, {'+'.join(sorted(self.scopes))})"


def parse_api_keys(text: str) -> list[tuple[str, str, frozenset[Scope]]]:
    """`name:secret:scope[+scope…]`, comma-separated, as (name, secret, scopes).

    The secret is what lies between the first and the last colon, so it may itself contain colons.
    Raises ValueError with a message that names the entry (by position and name), never its secret.
    """
    entries = [part.strip() for part in text.split(",")]
    if not any(entries):
        raise ValueError(f"no key given (expected {FORMAT}, comma-separated)")
    parsed: list[tuple[str, str, frozenset[Scope]]] = []
    names: set[str] = set()
    digests: dict[bytes, str] = {}
    for position, entry in enumerate(entries, start=1):
        if not entry:
            raise ValueError(f"entry {position} is empty (expected {FORMAT})")
        name, sep1, rest = entry.partition(":")
        secret, sep2, scope_text = rest.rpartition(":")
        if not (sep1 and sep2 and name and secret and scope_text):
            raise ValueError(f"entry {position} is not {FORMAT}")
        if not KEY_NAME.fullmatch(name):
            raise ValueError(f"entry {position}: a key name is 1-64 characters of [A-Za-z0-9._-]")
        label = f"entry {position} ({name!r})"
        if name in names:
            raise ValueError(f"{label}: the name {name!r} is used twice")
        if not KEY_SECRET.fullmatch(secret):
            raise ValueError(f"{label}: a secret is printable ASCII without spaces or commas")
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(f"{label}: the secret is shorter than {MIN_SECRET_LENGTH} characters")
        scopes = set()
        for word in scope_text.split("+"):
            try:
                scopes.add(Scope(word.strip().lower()))
            except ValueError:
                known = ", ".join(s.value for s in Scope)
                raise ValueError(f"{label}: unknown scope {word.strip()[:20]!r} (known: {known})") from None
        digest = _digest(secret)
        if digest in digests:
            raise ValueError(f"{label}: the same secret as {digests[digest]!r}; give each key its own")
        names.add(name)
        digests[digest] = name
        parsed.append((name, secret, frozenset(scopes)))
    return parsed


class KeyRing:
    """The configured keys. Read and ingest are open until some key holds that very scope (SPEC §10: reads
    are open unless some key has the read scope; `API_KEY` alone protects ingest, as before); operate and
    admin are never open — with no such key configured, those routes refuse everyone."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self.keys = tuple(keys)
        self._protected = frozenset(s for key in keys for s in key.scopes) | {Scope.operate, Scope.admin}

    @classmethod
    def from_secrets(cls, api_keys: str | None, api_key: str | None) -> KeyRing:
        keys = [
            ApiKey(name, scopes, _digest(secret)) for name, secret, scopes in parse_api_keys(api_keys or "")
        ] if api_keys else []  # fmt: skip
        if api_key:
            digest = _digest(api_key)
            clash = next((k.name for k in keys if hmac.compare_digest(k.digest, digest)), None)
            if clash is not None:
                raise ValueError(f"API_KEY has the same secret as key {clash!r} of API_KEYS")
            keys.append(ApiKey(LEGACY_KEY_NAME, frozenset({Scope.ingest}), digest))
        return cls(keys)

    def protects(self, scope: Scope) -> bool:
        return scope in self._protected

    def authenticate(self, presented: str) -> ApiKey | None:
        """The key whose secret is `presented`, or None. Every configured key is compared, whatever matches."""
        digest = _digest(presented)
        found = None
        for key in self.keys:
            if hmac.compare_digest(key.digest, digest):
                found = key
        return found

    def __len__(self) -> int:
        return len(self.keys)
