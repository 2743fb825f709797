"""The Lua scripts of every check-then-write in Redis, one `.lua` file each, so each step is atomic.

Why Lua: a turn's life touches several keys at once (the session, its lane, the job record, its
event stream and RQ's queue), and each step must happen whole or not at all, whichever process
dies when. Agents' writes and a summary report's admission are scripts for the same reason.

How a script is made (the one way): `<name>.lua` is a runnable script; its header says what it does,
then `-- uses: a, b` (optional), then one `-- KEYS:` line and one `-- ARGV:` line naming each by position
(`4.. metrics`: the 4th and every later one), then what the names hold and what it returns. What runs
(`load(name)`) is each used snippet `lib_<a>.lua`, `lib_<b>.lua` (Lua local functions) in that order, then
`<name>.lua` as it is: nothing is rewritten or appended, so the header is exactly what runs. The only
generated text is the tables in front of `lib_telemetry.lua` (METRIC, BUCKETS, BOUNDED), made from
shared/telemetry.py's METRICS when this package loads. A script that takes more than a few arguments has a
named builder in `calls.py` (tests/unit/test_script_headers.py checks its fields against the header).

A session's *lane* is the list of its accepted, unfinished turns in arrival order (RPUSH in
ACCEPT_TURN, so the order comes from Redis). Only the lane's head is ever in RQ's queue; the
others wait as `deferred` RQ jobs. FINISH_TURN removes a turn from its lane and pushes the new
head onto RQ's queue in the same step, so turns of a session run one at a time, in order,
across any number of workers, with no window in which a crash could stall the lane.

A tenant's *line* sits between the lanes and RQ's queue: at most PARLEY_TENANT_CONCURRENCY of a
tenant's turns are *admitted* (in RQ's queue or running, counted in `keys.tenant_admitted`); a lane
head that becomes ready beyond that waits, still a `deferred` RQ job, in the tenant's line, and
moves to RQ's queue when one of the tenant's admitted turns ends. So one tenant's backlog queues in
its own line, never in front of another tenant's turns. The job hash's `place` field says what a
turn holds ('admitted', 'line', or nothing), so each ending releases exactly that (lib_tenant_line.lua).

Whole or not at all: Redis keeps what a script wrote before it failed. So every script decodes
and checks all of its arguments before its first write, and a bad argument changes nothing.

Telemetry: START_TURN and FINISH_TURN also record metrics (lib_telemetry.lua), said in their own
header: the metric hashes are their last KEYS, the process's buffered deltas their last ARGV, and the
file runs in three parts: the replay check, the step (a local function), then the metrics.

Run twice: the Redis client retries a command once when its connection drops (connection.py),
and the first run may have happened before the reply was lost. So a script run a second time with
the same arguments must change nothing and answer as the first run did:
- ACCEPT_TURN: the job id is the call's name; a job that exists answers 'accepted' again.
- START_TURN, FINISH_TURN: the caller names each call (a fresh `call_id`); the job hash keeps the id
  of the call that started or ended the turn (`start_call`, `finish_call`), and the script checks it
  first, before the step and its telemetry, so a second run of that call gives the first run's
  answer and writes nothing, metrics neither.
- EMIT_TURN_EVENT: a whole batch of events is one run, named by its call id; the job hash keeps the
  last call written (`emitted`), so the same batch sent again writes nothing.
- CREATE_SESSION is NOT: its second run finds the session and answers "not created" (see there); nor is
  FORK_SESSION (its second run answers 'exists'). SWEEP_SESSION's second run finds nothing due.
- PAUSE_TURN: like FINISH_TURN (`pause_call`). FINISH_TURN, PAUSE_TURN and TAKE_STEERS also write a turn's end
  to the turn-ends stream for webhooks (lib_turn_end.lua) in their step, so their replay writes no second entry.
- Webhook deliveries (CREATE_DELIVERY, CLAIM_DELIVERIES, RECORD_ATTEMPT): each header says how it is run twice.
- SET_FEEDBACK: a compare-and-set; its second run finds the message changed by the first and writes nothing.
- CREATE_SCHEDULE, CLAIM_SCHEDULE, ADVANCE_SCHEDULE: each header says what its second run answers.
The scripts of agents, the summary report and telemetry's ADD_BOUNDED are not covered by this note.
"""

from __future__ import annotations

import re
from importlib.resources import files

from parley.shared import telemetry

USES = re.compile(r"^-- uses: (.+)$", re.MULTILINE)


def source(name: str) -> str:
    """The text of `<name>.lua` in this package, as stored."""
    return (files(__name__) / f"{name}.lua").read_text(encoding="utf-8")


def uses(text: str) -> list[str]:
    """The snippets a script's `-- uses:` line names, in order."""
    found = USES.search(text)
    return [name.strip() for name in found.group(1).split(",")] if found else []


def telemetry_tables() -> str:
    """Lua tables lib_telemetry.lua reads, from telemetry.METRICS: each metric's index (its position among
    a recording script's metric KEYS), each histogram's bucket bounds, and each bounded metric's cap."""
    index = telemetry.INDEX
    names = ", ".join(f"{name} = {position}" for name, position in index.items())
    buckets = ", ".join(f"[{index[metric.name]}] = {_lua_buckets(metric.buckets)}"
                        for metric in telemetry.METRICS if metric.buckets)  # fmt: skip
    bounded = ", ".join(f"[{index[name]}] = {cap}" for name, cap in telemetry.BOUNDED.items())
    return (
        "-- Generated from shared/telemetry.py's METRICS (shared/store/scripts/__init__.py).\n"
        f"local METRIC = {{{names}}}\nlocal BUCKETS = {{{buckets}}}\nlocal BOUNDED = {{{bounded}}}\n"
    )


def _lua_buckets(bounds: tuple[float, ...]) -> str:
    """{{bound, le text}, ...}: the number Lua compares, the text the field is named by (telemetry.le_text)."""
    return "{" + ", ".join(f"{{{bound!r}, '{telemetry.le_text(bound)}'}}" for bound in bounds) + "}"


def snippet(name: str) -> str:
    """What `-- uses: <name>` puts in front of a script: lib_<name>.lua (telemetry's with its tables first)."""
    text = source(f"lib_{name}")
    return telemetry_tables() + text if name == "telemetry" else text


def load(name: str) -> str:
    """The script that runs for `<name>.lua`: the snippets it uses, in order, then the file as it is."""
    text = source(name)
    return "".join(snippet(used) + "\n" for used in uses(text)) + text


ACCEPT_TURN = load("accept_turn")
START_TURN = load("start_turn")
EMIT_TURN_EVENT = load("emit_turn_event")
FINISH_TURN = load("finish_turn")
READ_CONTEXT = load("read_context")
CREATE_SESSION = load("create_session")
ADMIT_REPORT = load("admit_report")
RELEASE_REPORT = load("release_report")
EMIT_EVENT = load("emit_event")
CREATE_AGENT = load("create_agent")
UPDATE_AGENT = load("update_agent")
DELETE_AGENT = load("delete_agent")
ADD_BOUNDED = load("add_bounded")
PAUSE_TURN = load("pause_turn")
DECIDE_APPROVAL = load("decide_approval")
CREATE_DELIVERY = load("create_delivery")
CLAIM_DELIVERIES = load("claim_deliveries")
RECORD_ATTEMPT = load("record_attempt")
SET_FEEDBACK = load("set_feedback")
TAKE_STEERS = load("take_steers")
FORK_SESSION = load("fork_session")
SWEEP_SESSION = load("sweep_session")
ADD_USAGE = load("add_usage")
COUNT_CANCELED = load("count_canceled")

RUNNABLE = ("accept_turn", "start_turn", "emit_turn_event", "finish_turn", "read_context", "create_session",
            "admit_report", "release_report", "emit_event", "create_agent", "update_agent", "delete_agent",
            "add_bounded", "pause_turn", "decide_approval", "set_feedback", "take_steers",
            "create_schedule", "claim_schedule", "advance_schedule", "create_delivery", "claim_deliveries",
            "record_attempt", "fork_session", "sweep_session", "add_usage",
            "count_canceled")  # fmt: skip
"""Every runnable script of this package (the rest, lib_*.lua, are snippets)."""

CREATE_SCHEDULE = load("create_schedule")
CLAIM_SCHEDULE = load("claim_schedule")
ADVANCE_SCHEDULE = load("advance_schedule")
