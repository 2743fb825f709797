"""Sealing every kept credential anew with the first key of PARLEY_SECRETS_KEY: the step of a key rotation that lets
the old key be dropped (`python -m parley.shared.store.reseal`, with the deployment's PARLEY_REDIS_URL and the new
PARLEY_SECRETS_KEY, new key first, old one after it; REDIS_URL says where Redis is).

Each MCP server and webhook record (A2A push configs included) is read, opened with any listed key and written
again sealed with the first, unless it changed meanwhile (WATCH: then it is read again; a record written by a web
with the new keys is sealed with the first key already). Records written before a key was set are sealed too.
A record no listed key opens is left as it is and counted: it was unreadable already.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from parley.shared.sealing import Sealer
from parley.shared.settings import Settings
from parley.shared.store import keys
from parley.shared.store.connection import connect
from parley.shared.store.mcp_servers import decode_server, encode_server
from parley.shared.store.webhooks import decode_webhook, encode_webhook

TRIES = 5
"""How often a record that keeps changing under the command is read again before it is counted as skipped."""


@dataclass
class Resealed:
    """What one run did, by outcome (every record is in exactly one)."""

    sealed: int = 0
    unreadable: int = 0
    skipped: int = 0
    """Changed under the command TRIES times in a row: run it again."""


Recode = Callable[[str, str, Sealer], str | None]
"""A record's field and value -> the value sealed anew, or None when no key opens it."""


def _recode_server(name: str, raw: str, sealer: Sealer) -> str | None:
    server = decode_server(name, raw, sealer)
    return None if server is None else encode_server(server, sealer)


def _recode_webhook(webhook_id: str, raw: str, sealer: Sealer) -> str | None:
    hook = decode_webhook(webhook_id, raw, sealer)
    return None if hook is None else encode_webhook(hook, sealer)


RECORDS: tuple[tuple[str, Recode], ...] = (
    (keys.mcp_servers("*"), _recode_server),
    (keys.webhooks("*"), _recode_webhook),
)
"""Every hash whose values hold sealed credentials (its SCAN pattern), and how a value is sealed anew."""


def reseal(r: redis.Redis, sealer: Sealer) -> Resealed:
    """Seal every kept credential anew with `sealer`'s first key. `r` decodes replies (the `text` client)."""
    if not sealer.sealing:
        raise ValueError("PARLEY_SECRETS_KEY is not set: there is no key to seal with")
    done = Resealed()
    for pattern, recode in RECORDS:
        for key in r.scan_iter(match=pattern, count=500, _type="hash"):
            for field in r.hkeys(key):
                _reseal_one(r, key, field, recode, sealer, done)
    return done


def _reseal_one(r: redis.Redis, key: str, field: str, recode: Recode, sealer: Sealer, done: Resealed) -> None:
    with r.pipeline() as pipe:
        for _ in range(TRIES):
            try:
                pipe.watch(key)
                raw: Any = pipe.hget(key, field)
                if raw is None:
                    return  # deleted meanwhile
                fresh = recode(field, raw, sealer)
                if fresh is None:
                    done.unreadable += 1
                    return
                pipe.multi()
                pipe.hset(key, field, fresh)
                pipe.execute()
                done.sealed += 1
                return
            except redis.WatchError:
                continue
    done.skipped += 1


def main() -> int:
    settings = Settings()
    try:
        done = reseal(connect(settings).text, settings.sealer)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except redis.RedisError as error:
        print(f"error: Redis ({settings.redis_url}) did not answer: {error}; nothing was lost, run it again",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"sealed anew with the first key: {done.sealed} record(s); unreadable (no listed key opens them, left as "
          f"they are): {done.unreadable}; changed while being read (run the command again): {done.skipped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
