"""Tenants' credentials at rest: what Parley keeps in Redis only to send it on (MCP servers' header values, webhook
signing secrets, A2A push tokens and `Authorization` values) is sealed with PARLEY_SECRETS_KEY before it is written,
so a Redis dump, AOF file or backup holds no credential anyone can use.

PARLEY_SECRETS_KEY holds one or more Fernet keys (AES-128-CBC with HMAC-SHA256: `cryptography`), comma-separated:
the first seals, every one unseals, so a key is rotated by putting the new one first, sealing every record anew
(`python -m parley.shared.store.reseal`) and then dropping the old one. A sealed value is `sealed:v1:<Fernet token>`;
any other value is read as it is, so records written before the key was set stay readable (and are sealed when next
written, or by the reseal command). Without the setting, values are written as they are (docs/security.md says so).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

SEALED = "sealed:v1:"


class Unsealable(ValueError):
    """A sealed value that no key of PARLEY_SECRETS_KEY opens (the key it was sealed with was dropped, or it
    was changed)."""


class Sealer:
    """Seals and unseals with the keys of PARLEY_SECRETS_KEY; with none, leaves values as they are."""

    def __init__(self, keys_text: str) -> None:
        """ValueError naming the setting when a key is not a Fernet key (32 url-safe base64-encoded bytes).
        `cryptography` is imported only when there is a key: a deployment without one does not load it."""
        keys = [key.strip() for key in keys_text.split(",") if key.strip()]
        self._fernet: MultiFernet | None = None
        if not keys:
            return
        from cryptography.fernet import Fernet, MultiFernet

        try:
            self._fernet = MultiFernet([Fernet(key) for key in keys])
        except (ValueError, TypeError):
            raise ValueError("PARLEY_SECRETS_KEY: each comma-separated key must be a Fernet key, 32 url-safe "
                             "base64-encoded bytes (make one with `python -m parley.shared.sealing`)") from None

    @property
    def sealing(self) -> bool:
        return self._fernet is not None

    def seal(self, value: str) -> str:
        if self._fernet is None:
            return value
        return SEALED + self._fernet.encrypt(value.encode()).decode()

    def unseal(self, value: str) -> str:
        """The value as written; Unsealable when it is sealed and no key opens it."""
        if not value.startswith(SEALED):
            return value
        if self._fernet is None:
            raise Unsealable("the value is sealed and PARLEY_SECRETS_KEY is not set")
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(value[len(SEALED):].encode()).decode()
        except InvalidToken:
            raise Unsealable("no key of PARLEY_SECRETS_KEY opens the sealed value") from None


PLAIN = Sealer("")
"""Seals nothing (no PARLEY_SECRETS_KEY); still refuses to pass a sealed value off as a plain one."""


@lru_cache(maxsize=4)
def sealer(keys_text: str) -> Sealer:
    """The Sealer of a PARLEY_SECRETS_KEY text, made once per text."""
    return Sealer(keys_text)


if __name__ == "__main__":  # `python -m parley.shared.sealing`: a new key for PARLEY_SECRETS_KEY
    from cryptography.fernet import Fernet

    print(Fernet.generate_key().decode())
