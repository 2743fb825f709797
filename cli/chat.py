"""`parley chat`: choosing the agent and the session, and running turns over the SDK's event stream."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from parley.client import (
    AgentPublic,
    ConflictError,
    Event,
    EventType,
    NotFoundError,
    OnBusy,
    Parley,
    SessionPublic,
)

from .errors import API_ERROR, NOT_FOUND, CLIError
from .render import TurnPrinter
from .state import State


@dataclass
class Conversation:
    agent: AgentPublic
    session: SessionPublic
    continued: bool


Chooser = Callable[[Sequence[AgentPublic]], AgentPublic]
Note = Callable[[str], None]
Decider = Callable[[str | None, Event], tuple[bool, str | None]]
"""Asked for each `approval_required` event (with the job id): (approve, reason); may raise AwaitingApproval."""


def get_agent(client: Parley, name: str) -> AgentPublic:
    try:
        return client.agents.get(name)
    except NotFoundError:
        raise CLIError(f"no agent {name!r} (see `parley agents list`)", NOT_FOUND) from None


def resolve_agent(client: Parley, name: str | None, choose: Chooser) -> AgentPublic:
    """The agent named by `name`; else the only agent; else the one `choose` picks among all."""
    if name:
        return get_agent(client, name)
    agents = client.agents.list()
    if not agents:
        raise CLIError("there are no agents yet: create one with `parley agents create -f agent.yaml`", API_ERROR)
    if len(agents) == 1:
        return agents[0]
    return choose(agents)


def _existing_session(client: Parley, session_id: str) -> SessionPublic | None:
    try:
        return client.sessions.get(session_id)
    except NotFoundError:
        return None


def open_conversation(client: Parley, state: State, *, agent_name: str | None, session_id: str | None, new: bool,
                      choose: Chooser, note: Note) -> Conversation:  # fmt: skip
    """Find or start the session to talk in, remember it in the state file, and say which it is.

    `--session ID`: that session (created with the chosen agent when it does not exist yet).
    Otherwise the agent's last session from the state file, unless `new` or it is gone; else a new one.
    """
    if session_id:
        session = _existing_session(client, session_id)
        if session is not None:
            if agent_name and agent_name not in (session.agent_name, session.agent_id):
                raise CLIError(f"session {session_id} belongs to agent {session.agent_name or session.agent_id!r},"
                               f" not {agent_name!r}", API_ERROR)  # fmt: skip
            agent = get_agent(client, session.agent_id)
            return _continue(state, agent, session, note)
        agent = resolve_agent(client, agent_name, choose)
        return _start(client, state, agent, session_id, note)
    agent = resolve_agent(client, agent_name, choose)
    if not new:
        last = state.last_session(agent.id)
        session = _existing_session(client, last) if last else None
        if session is not None and session.agent_id == agent.id:
            return _continue(state, agent, session, note)
    return _start(client, state, agent, None, note)


def _continue(state: State, agent: AgentPublic, session: SessionPublic, note: Note) -> Conversation:
    state.remember(agent.id, session.session_id)
    note(f"continuing session {session.session_id} with {agent.name} ({session.message_count} messages;"
         " --new starts another)")  # fmt: skip
    return Conversation(agent, session, continued=True)


def _start(client: Parley, state: State, agent: AgentPublic, session_id: str | None, note: Note) -> Conversation:
    session = client.sessions.create(agent.id, session_id=session_id)
    state.remember(agent.id, session.session_id)
    note(f"new session {session.session_id} with {agent.name}")
    return Conversation(agent, session, continued=False)


def run_turn(client: Parley, session_id: str, message: str, printer: TurnPrinter,
             decide: Decider | None = None, *, on_busy: OnBusy | None = None,
             regenerate: bool = False) -> None:  # fmt: skip
    """Send `message` in the session and print its events until `done`; TurnFailed after an `error` event.

    A tool call that waits for approval is put to `decide` and its answer posted; the stream goes on
    (the turn resumes on the service once every waiting call is decided). Without `decide` the turn just waits.
    Ctrl-C (also at an approval prompt) cancels the turn on the service (when its job is known) before it propagates.
    `on_busy` is sent with the message (`reject`, `interrupt`, `steer`; the service's default `enqueue` when None);
    `regenerate` sends no message and answers the session's last one again.
    """
    stream = client.stream(message, session_id=session_id, on_busy=on_busy, regenerate=regenerate)
    try:
        with stream:
            for event in stream:
                printer.handle(event)
                if decide is not None and event.type == EventType.APPROVAL_REQUIRED:
                    answer_approval(client, printer.job_id or stream.job_id, event, decide, printer.note)
    except KeyboardInterrupt:
        printer.finish_line()
        job_id = printer.job_id or stream.job_id
        if job_id:
            result = client.jobs.cancel(job_id)
            printer.note(f"[canceled job {job_id}]" if result.canceled else f"[job {job_id} had already ended]")
        raise
    printer.finish()


def answer_approval(client: Parley, job_id: str | None, event: Event, decide: Decider, note: Note) -> None:
    """Ask `decide` about one waiting call and post the answer. A call decided meanwhile elsewhere (the web UI,
    another terminal: 409) or gone (404) is said and skipped: the stream shows what happens next."""
    if job_id is None or event.call_id is None:
        raise CLIError("an approval_required event came without its job or call id: cannot answer it", API_ERROR)
    approve, reason = decide(job_id, event)
    try:
        if approve:
            client.approve(job_id, event.call_id, reason)
        else:
            client.deny(job_id, event.call_id, reason)
    except (ConflictError, NotFoundError) as error:
        note(f"[call {event.call_id} was not decided here: {error.message}]")
        return
    note(f"[{'approved' if approve else 'denied'}: {event.tool_name}]")
