"""Pins every Redis key and channel name: stored data outlives a deploy, so a changed format
silently orphans it. Also: tenants never share a key, and Idempotency-Keys are stored hashed."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from parley.shared.store import keys

SHA_OF_ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_prefix_and_file_scope() -> None:
    assert keys.PREFIX == "parley"
    assert keys.FILE_SCOPE == "_file"


def test_agent() -> None:
    assert keys.agent("acme", "agent-1") == "parley:agent:acme:agent-1"


def test_agents() -> None:
    assert keys.agents("acme") == "parley:agents:acme"


def test_agent_names() -> None:
    assert keys.agent_names("acme") == "parley:agent-names:acme"


def test_session() -> None:
    assert keys.session("acme", "s1") == "parley:session:acme:s1"


def test_sessions() -> None:
    assert keys.sessions("acme") == "parley:sessions:acme"


def test_agent_sessions() -> None:
    assert keys.agent_sessions("acme", "agent-1") == "parley:agent-sessions:acme:agent-1"


def test_messages() -> None:
    assert keys.messages("acme", "s1") == "parley:messages:acme:s1"


def test_lane() -> None:
    assert keys.lane("acme", "s1") == "parley:lane:acme:s1"


def test_job() -> None:
    assert keys.job("acme", "job_1") == "parley:job:acme:job_1"


def test_events() -> None:
    assert keys.events("acme", "job_1") == "parley:events:acme:job_1"


def test_live_channel() -> None:
    assert keys.live_channel("acme", "job_1") == "parley:live:acme:job_1"


def test_idempotency() -> None:
    assert keys.idempotency("acme", "abc") == f"parley:idem:acme:{SHA_OF_ABC}"


def test_rq_job() -> None:
    assert keys.rq_job("job_1") == "rq:job:job_1"


def test_rq_queue() -> None:
    assert keys.rq_queue("parley-turns") == "rq:queue:parley-turns"


SCOPED_TWO: list[Callable[[str, str], str]] = [
    keys.agent, keys.agent_sessions, keys.session, keys.messages, keys.lane, keys.job, keys.events,
    keys.live_channel, keys.idempotency,
]  # fmt: skip
SCOPED_ONE: list[Callable[[str], str]] = [keys.agents, keys.agent_names, keys.sessions]


@pytest.mark.parametrize("build", SCOPED_TWO, ids=lambda f: f.__name__)
def test_same_ids_in_two_tenants_do_not_collide(build: Callable[[str, str], str]) -> None:
    assert build("alice", "x1") != build("bob", "x1")
    assert build("alice", "x1") != build(keys.FILE_SCOPE, "x1")


@pytest.mark.parametrize("build", SCOPED_ONE, ids=lambda f: f.__name__)
def test_tenant_indexes_do_not_collide(build: Callable[[str], str]) -> None:
    assert build("alice") != build("bob")
    assert build("alice") != build(keys.FILE_SCOPE)


def test_no_two_kinds_of_key_share_a_name() -> None:
    built = [build("t", "x") for build in SCOPED_TWO] + [build("t") for build in SCOPED_ONE]
    built += [keys.rq_job("x"), keys.rq_queue("x")]
    assert len(set(built)) == len(built)


def test_idempotency_keys_are_hashed() -> None:
    secret = "client-chosen key: may hold anything"
    key = keys.idempotency("acme", secret)
    assert secret not in key
    assert key == f"parley:idem:acme:{hashlib.sha256(secret.encode()).hexdigest()}"
    assert keys.idempotency("acme", secret) == key  # stable
    assert keys.idempotency("acme", secret + "!") != key
    assert keys.idempotency("bob", secret) != key


def test_idempotency_key_length_is_fixed() -> None:
    short, long = keys.idempotency("acme", "k"), keys.idempotency("acme", "k" * 255)
    assert len(short) == len(long) == len("parley:idem:acme:") + 64


def test_limit_counters() -> None:
    assert keys.inflight("alice") == "parley:inflight:alice"
    digest = hashlib.sha256(b"key-alice").hexdigest()
    assert keys.rate("alice", "key-alice") == f"parley:rate:alice:{digest}"
    assert "key-alice" not in keys.rate("alice", "key-alice")


def test_hardening_keys() -> None:
    assert keys.request_rate("alice") == "parley:request-rate:alice"
    assert keys.tenant_admitted("alice") == "parley:tenant-admitted:alice"
    assert keys.tenant_line("alice") == "parley:tenant-line:alice"
    assert keys.tool_runs("alice", "job_1") == "parley:tool-runs:alice:job_1"
    assert keys.pending_notes("alice", "job_1") == "parley:pending-notes:alice:job_1"
    assert keys.summary_report("alice", "s1") == "parley:summary-report:alice:s1"


def test_hub_channel() -> None:
    assert keys.hub_channel() == "parley:hub"


def test_session_expiries() -> None:
    assert keys.session_expiries() == "parley:session-expiries"
    assert keys.session_expiry_member("acme", "agent-1", "s 1") == '["acme","agent-1","s 1"]'


def test_no_key_is_spelled_outside_keys_py() -> None:
    """`keys.py` is the one place a key name is built: a `parley:<kind>` or `rq:<kind>` literal anywhere else
    in the product (Python or Lua) is a second author of a key's format."""
    root = Path(__file__).resolve().parents[2]
    literal = re.compile(r"""["'](?:parley|rq):\S|\{(?:keys\.)?PREFIX\}""")
    sources = [path for room in ("api", "worker", "shared", "client", "cli", "local")
               for pattern in ("*.py", "*.lua") for path in (root / room).rglob(pattern)]  # fmt: skip
    assert any(path.name == "keys.py" for path in sources)
    offences = [f"{path.relative_to(root)}: {match.group()}" for path in sources if path.name != "keys.py"
                for match in literal.finditer(path.read_text(encoding="utf-8"))]  # fmt: skip
    assert offences == []


def test_feedback_keys() -> None:
    assert keys.feedback("alice") == "parley:feedback:alice"
    assert keys.agent_feedback("alice", "agent-1") == "parley:agent-feedback:alice:agent-1"
    assert keys.feedback("alice") != keys.feedback("bob")
    assert keys.agent_feedback("alice", "a") != keys.agent_feedback("bob", "a")


def test_schedule_keys() -> None:
    assert keys.schedule("alice", "sch_1") == "parley:schedule:alice:sch_1"
    assert keys.schedules("alice") == "parley:schedules:alice"
    assert keys.schedules_due() == "parley:schedules-due"
    assert keys.schedule("alice", "x1") != keys.schedule("bob", "x1")
    assert keys.schedules("alice") != keys.schedules("bob")


def test_usage_keys() -> None:
    assert keys.usage_day("alice", "2026-12-03") == "parley:usage:alice:2026-12-03"
    assert keys.usage_agents("alice", "2026-12-03") == "parley:usage-agents:alice:2026-12-03"
    assert keys.usage_sessions("alice", "2026-12-03") == "parley:usage-sessions:alice:2026-12-03"
    assert keys.usage_day("alice", "2026-12-03") != keys.usage_day("bob", "2026-12-03")
