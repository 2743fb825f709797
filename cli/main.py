"""The `parley` command: Typer commands over the SDK. Every call goes through `parley.client.Parley`.

Errors never show a traceback: `ParleyGroup.invoke` turns SDK and CLI errors into one line on
stderr and the documented exit code (see errors.py and docs/cli.md).
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, cast

import typer
import yaml
from typer.core import TyperGroup

from parley.client import (
    DEFAULT_BASE_URL,
    AgentFields,
    AgentPublic,
    Event,
    GatewayTimeoutError,
    MessagePublic,
    ModelError,
    OnBusy,
    Parley,
    ParleyError,
    PayloadTooLargeError,
    RateLimitError,
    Rating,
    ValidationError,
)

from . import errors, render
from .chat import Decider, get_agent, open_conversation, run_turn
from .errors import USAGE, AwaitingApproval, CLIError, TurnFailed
from .state import State, default_path


class ExportFormat(StrEnum):
    json = "json"
    markdown = "markdown"


class OnBusyChoice(StrEnum):
    """`parley chat --on-busy`: the chat request's `on_busy` (docs/cli.md)."""

    enqueue = "enqueue"
    reject = "reject"
    interrupt = "interrupt"
    steer = "steer"


class WebhookEvent(StrEnum):
    finished = "turn.finished"
    failed = "turn.failed"
    canceled = "turn.canceled"
    waiting = "turn.waiting"


READ_ONLY_AGENT_FIELDS = ("id", "created_at", "updated_at", "source")
MESSAGE_PAGE = 1000


@dataclass
class Config:
    url: str
    api_key: str | None
    _client: Parley | None = field(default=None, repr=False)

    def client(self) -> Parley:
        if self._client is None:
            self._client = Parley(self.url, self.api_key)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def state(self) -> State:
        return State(default_path(), self.url, self.api_key)


class ParleyGroup(TyperGroup):
    """The root command: maps any SDK/CLI error to `parley: <one line>` on stderr and its exit code."""

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (ParleyError, CLIError) as error:
            config = ctx.obj if isinstance(ctx.obj, Config) else None
            url = config.url if config else DEFAULT_BASE_URL
            typer.echo(f"parley: {errors.describe(error, url)}", err=True)
            raise typer.Exit(errors.exit_code(error)) from None


app = typer.Typer(
    cls=ParleyGroup,
    name="parley",
    help="Talk to Parley agents and manage agents, sessions and jobs from the command line.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
agents_app = typer.Typer(help="List, show, create and delete agents.", no_args_is_help=True)
sessions_app = typer.Typer(help="List, show, export and delete sessions (conversations).", no_args_is_help=True)
jobs_app = typer.Typer(help="Follow, inspect, approve and cancel turns (jobs).", no_args_is_help=True)
feedback_app = typer.Typer(help="Rate agents' answers (up, down, clear) and list the ratings.", no_args_is_help=True)
webhooks_app = typer.Typer(help="Create, list, show and delete webhooks, and see their deliveries.",
                           no_args_is_help=True)  # fmt: skip
schedules_app = typer.Typer(help="Create, list, show and delete schedules (turns run on a cron or interval).",
                            no_args_is_help=True)  # fmt: skip
app.add_typer(agents_app, name="agents")
app.add_typer(sessions_app, name="sessions")
app.add_typer(jobs_app, name="jobs")
app.add_typer(feedback_app, name="feedback")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(schedules_app, name="schedules")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of a table.")]


@app.callback()
def main(
    ctx: typer.Context,
    url: Annotated[str, typer.Option("--url", envvar="PARLEY_URL", help="The service's URL.")] = DEFAULT_BASE_URL,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="PARLEY_API_KEY", show_default=False,
                                                help="Your API key.")] = None,  # fmt: skip
) -> None:
    config = Config(url.rstrip("/"), api_key or None)
    ctx.obj = config
    ctx.call_on_close(config.close)


def _config(ctx: typer.Context) -> Config:
    root = ctx.find_root()
    assert isinstance(root.obj, Config)
    return root.obj


def _echo(text: str) -> None:
    typer.echo(text)


def _note(text: str) -> None:
    typer.echo(render.dim(text), err=True)


def _out(text: str, newline: bool) -> None:
    typer.echo(text, nl=newline)  # click.echo flushes


def _print_json(value: Any) -> None:
    typer.echo(render.json_document(value))


# -- chat ---------------------------------------------------------------------------------


def _choose_agent(agents: Sequence[AgentPublic]) -> AgentPublic:
    if not sys.stdin.isatty():
        names = ", ".join(a.name for a in agents)
        raise CLIError(f"several agents exist ({names}): choose one with --agent", USAGE)
    typer.echo("Agents:", err=True)
    for number, agent in enumerate(agents, 1):
        description = f"  {render.dim(render.one_line(agent.description, 60))}" if agent.description else ""
        typer.echo(f"  {number}. {agent.name}{description}", err=True)
    while True:
        number = typer.prompt("Talk to which agent", type=int, default=1, err=True)
        if 1 <= number <= len(agents):
            return agents[number - 1]
        typer.echo(f"choose a number from 1 to {len(agents)}", err=True)


def approval_decider(approve_all: bool, deny_all: bool) -> Decider:
    """How `parley chat` decides a tool call that waits for approval: the flag's answer, else ask on the
    terminal (`Run it? [y/N]`, then an optional reason for a denial); with no terminal, AwaitingApproval
    (exit 7): the turn stays waiting on the service for `parley jobs approve|deny` or the web UI."""

    def decide(job_id: str | None, event: Event) -> tuple[bool, str | None]:
        if approve_all:
            return True, None
        if deny_all:
            return False, "denied by --deny-all"
        if not sys.stdin.isatty():
            raise AwaitingApproval(job_id, event.call_id, event.tool_name)
        if typer.confirm("Run it?", default=False, err=True):
            return True, None
        reason = typer.prompt("Why not? (told to the model; Enter to skip)", default="", show_default=False,
                              err=True)  # fmt: skip
        return False, reason.strip() or None

    return decide


_RECOVERABLE = (TurnFailed, ModelError, GatewayTimeoutError, RateLimitError, ValidationError, PayloadTooLargeError)


@app.command()
def chat(
    ctx: typer.Context,
    agent: Annotated[str | None, typer.Option("--agent", "-a", help="The agent (name or id).")] = None,
    session: Annotated[str | None, typer.Option("--session", "-s", help="This session (created when new).")] = None,
    message: Annotated[str | None, typer.Option("--message", "-m", help="Send this one message and exit.")] = None,
    new: Annotated[bool, typer.Option("--new", help="Start a new session instead of continuing the last one.")] = False,
    approve_all: Annotated[bool, typer.Option("--approve-all", help="Approve every tool call that waits for "
                                              "approval, without asking.")] = False,  # fmt: skip
    deny_all: Annotated[bool, typer.Option("--deny-all", help="Deny every tool call that waits for approval, "
                                           "without asking.")] = False,  # fmt: skip
    regenerate: Annotated[bool, typer.Option("--regenerate", help="Answer the session's last message again (the "
                                             "new answer replaces the old one) and exit.")] = False,  # fmt: skip
    on_busy: Annotated[OnBusyChoice | None, typer.Option("--on-busy", help="While a turn of the session is in "
                                                         "flight: enqueue (the service's default), reject, "
                                                         "interrupt or steer.")] = None,  # fmt: skip
) -> None:
    """Talk with an agent; continues your last session with it (--new starts another).

    A tool call the agent's `approval` names is shown with its arguments and asks `Run it? [y/N]`.
    """
    if new and session:
        raise typer.BadParameter("--new and --session exclude each other", param_hint="--new")
    if regenerate and (new or message is not None):
        raise typer.BadParameter("--regenerate answers the session's last message again: no --new, no --message",
                                 param_hint="--regenerate")  # fmt: skip
    if approve_all and deny_all:
        raise typer.BadParameter("--approve-all and --deny-all exclude each other", param_hint="--approve-all")
    if message is not None and not message.strip():
        raise typer.BadParameter("the message is empty", param_hint="--message")
    config = _config(ctx)
    client = config.client()
    conversation = open_conversation(client, config.state(), agent_name=agent, session_id=session, new=new,
                                     choose=_choose_agent, note=_note)  # fmt: skip
    session_id = conversation.session.session_id
    decide = approval_decider(approve_all, deny_all)
    busy = cast(OnBusy, on_busy.value) if on_busy is not None else None
    if message is not None or regenerate:
        try:
            printer = render.TurnPrinter(_out, _note, hold_text=not sys.stdout.isatty())  # stdout: the answer alone
            run_turn(client, session_id, message or "", printer, decide, on_busy=busy, regenerate=regenerate)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        return
    _interactive(client, conversation.agent, session_id, decide, show_first=not conversation.continued, on_busy=busy)


def _interactive(client: Parley, agent: AgentPublic, session_id: str, decide: Decider, *, show_first: bool,
                 on_busy: OnBusy | None = None) -> None:  # fmt: skip
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:  # pragma: no cover - not on every platform
        pass
    _note("type a message and press Enter; /quit or Ctrl-D ends")
    label = render.style(f"{agent.name}> ", bold=True)
    if show_first and agent.first_message:
        _out(label + agent.first_message, True)
    while True:
        try:
            line = input("you> ")
        except EOFError:
            _out("", True)
            return
        except KeyboardInterrupt:
            _out("", True)
            return
        text = line.strip()
        if not text:
            continue
        if text in ("/quit", "/exit", "/q"):
            return
        _out(label, False)
        printer = render.TurnPrinter(_out, _note)
        try:
            run_turn(client, session_id, text, printer, decide, on_busy=on_busy)
        except KeyboardInterrupt:
            continue
        except _RECOVERABLE as error:
            printer.finish_line()
            typer.echo(render.style(f"parley: {errors.describe(error, client.base_url)}", fg="red"), err=True)


# -- agents -------------------------------------------------------------------------------


@agents_app.command("list")
def agents_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """The agents your key sees."""
    agents = _config(ctx).client().agents.list()
    if as_json:
        return _print_json(agents)
    if not agents:
        return _note("no agents yet: create one with `parley agents create -f agent.yaml`")
    rows = [(a.name, a.model, a.source, a.id, render.one_line(a.description, 50)) for a in agents]
    _echo(render.table(("NAME", "MODEL", "SOURCE", "ID", "DESCRIPTION"), rows))


@agents_app.command("show")
def agents_show(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Name or id.")],
                as_json: JsonFlag = False) -> None:  # fmt: skip
    """One agent, with all its fields."""
    agent = _get_agent(ctx, name)
    if as_json:
        return _print_json(agent)
    _echo(render.fields(agent.model_dump(mode="json").items()))


def _get_agent(ctx: typer.Context, name: str) -> AgentPublic:
    return get_agent(_config(ctx).client(), name)


def load_agent_file(path: str) -> dict[str, Any]:
    """The agent fields of a YAML or JSON file (`-` reads stdin); CLIError (usage) when unusable."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise CLIError(f"cannot read {path}: {error.strerror or error}", USAGE) from None
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        raise CLIError(f"{path} is not valid {'JSON' if path.endswith('.json') else 'YAML'}: "
                       f"{render.one_line(error, 200)}", USAGE) from None  # fmt: skip
    if not isinstance(data, dict):
        raise CLIError(f"{path} must hold one agent: a mapping of its fields (name, context, ...)", USAGE)
    if not isinstance(data.get("name"), str) or not data["name"].strip():
        raise CLIError(f"{path} has no `name`", USAGE)
    return {key: value for key, value in data.items() if key not in READ_ONLY_AGENT_FIELDS}


@agents_app.command("create")
def agents_create(
    ctx: typer.Context,
    file: Annotated[str, typer.Option("--file", "-f", help="YAML or JSON file with the agent's fields (- for stdin).")],
    as_json: JsonFlag = False,
) -> None:
    """Create an agent from a YAML or JSON file of its fields (name, context, first_message, ...)."""
    fields = load_agent_file(file)
    name = fields.pop("name")
    # AgentFields also lists `name`, so mypy sees it twice; the file's fields are checked by the API (422).
    agent = _config(ctx).client().agents.create(name, **cast(AgentFields, fields))  # type: ignore[misc]
    if as_json:
        return _print_json(agent)
    _echo(f"created agent {agent.name} ({agent.id})")


@agents_app.command("delete")
def agents_delete(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Name or id.")]) -> None:
    """Delete an agent (its sessions stay readable)."""
    client = _config(ctx).client()
    agent = _get_agent(ctx, name)
    client.agents.delete(agent.id)
    _echo(f"deleted agent {agent.name} ({agent.id})")


# -- sessions -----------------------------------------------------------------------------


@sessions_app.command("list")
def sessions_list(
    ctx: typer.Context,
    agent: Annotated[str | None, typer.Option("--agent", "-a", help="Only this agent's (name or id).")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=0, help="At most this many (0: all).")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """Sessions, newest first."""
    client = _config(ctx).client()
    found = client.sessions.list(agent=agent, page_size=min(limit, 100) if limit else 100)
    sessions = list(itertools.islice(found, limit) if limit else found)
    if as_json:
        return _print_json(sessions)
    if not sessions:
        return _note("no sessions")
    rows = [(s.session_id, s.agent_name or s.agent_id, s.message_count, s.created_at) for s in sessions]
    _echo(render.table(("SESSION", "AGENT", "MESSAGES", "CREATED"), rows))


def all_messages(client: Parley, session_id: str) -> list[MessagePublic]:
    """Every message of the session, oldest first (the API pages backwards with `before`)."""
    messages = client.sessions.messages(session_id, limit=MESSAGE_PAGE)
    batch = messages
    while len(batch) == MESSAGE_PAGE:
        batch = client.sessions.messages(session_id, limit=MESSAGE_PAGE, before=batch[0].id)
        messages = batch + messages
    return messages


@sessions_app.command("show")
def sessions_show(
    ctx: typer.Context,
    session_id: Annotated[str, typer.Argument(metavar="ID", help="The session id.")],
    last: Annotated[int, typer.Option("--last", help="Show this many of the latest messages.", min=0)] = 10,
    as_json: JsonFlag = False,
) -> None:
    """A session's facts and its latest messages (`export` gives them all)."""
    client = _config(ctx).client()
    session = client.sessions.get(session_id)
    messages = client.sessions.messages(session_id, limit=last) if last else []
    if as_json:
        return _print_json({"session": session, "messages": messages})
    _echo(render.fields(session.model_dump(mode="json").items()))
    if messages:
        _echo("")
        rows = [(m.id, m.role, m.created_at, m.job_id or "-", render.one_line(m.content, 70)) for m in messages]
        _echo(render.table(("MESSAGE", "ROLE", "CREATED", "JOB", "CONTENT"), rows))


@sessions_app.command("export")
def sessions_export(
    ctx: typer.Context,
    session_id: Annotated[str, typer.Argument(metavar="ID", help="The session id.")],
    fmt: Annotated[ExportFormat, typer.Option("--format", help="json or markdown.")] = ExportFormat.json,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file, not stdout.")] = None,
) -> None:
    """The session with all its messages, as JSON or Markdown."""
    client = _config(ctx).client()
    session = client.sessions.get(session_id)
    messages = all_messages(client, session_id)
    if fmt is ExportFormat.markdown:
        text = render.export_markdown(session, messages)
    else:
        text = render.export_json(session, messages)
    if output is None:
        typer.echo(text, nl=not text.endswith("\n"))
        return
    try:
        output.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    except OSError as error:
        raise CLIError(f"cannot write {output}: {error.strerror or error}") from None
    _note(f"wrote {len(messages)} messages to {output}")


@sessions_app.command("delete")
def sessions_delete(ctx: typer.Context, session_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Delete a session with its messages."""
    config = _config(ctx)
    config.client().sessions.delete(session_id)
    config.state().forget_session(session_id)
    _echo(f"deleted session {session_id}")


@sessions_app.command("fork")
def sessions_fork(
    ctx: typer.Context,
    session_id: Annotated[str, typer.Argument(metavar="ID", help="The session to branch from.")],
    at: Annotated[str, typer.Option("--at", help="The last message the new session keeps (msg_N).")],
    new_id: Annotated[str | None, typer.Option("--as", help="The new session's id (generated when omitted).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """A new session of the same agent with this session's messages up to --at; `parley chat -s NEW` goes on."""
    config = _config(ctx)
    forked = config.client().sessions.fork(session_id, at, new_session_id=new_id)
    config.state().remember(forked.agent_id, forked.session_id)
    if as_json:
        return _print_json(forked)
    _echo(f"forked session {session_id} at {at} into {forked.session_id} ({forked.message_count} messages)")


# -- jobs ---------------------------------------------------------------------------------


@jobs_app.command("show")
def jobs_show(ctx: typer.Context, job_id: Annotated[str, typer.Argument(metavar="ID", help="The job id.")],
              as_json: JsonFlag = False) -> None:  # fmt: skip
    """A turn's status, times, answer or error."""
    job = _config(ctx).client().jobs.get(job_id)
    if as_json:
        return _print_json(job)
    pairs: list[tuple[str, Any]] = [(k, v) for k, v in job.model_dump(mode="json").items() if k != "result"]
    if job.result is not None:
        pairs.append(("response", job.result.response))
    _echo(render.fields(pairs))


@jobs_app.command("tail")
def jobs_tail(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="ID", help="The job id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print each event as a JSON line.")] = False,
) -> None:
    """Follow a turn's events from its start until `done` (resumed when the connection drops)."""
    client = _config(ctx).client()
    if as_json:  # the events as JSON lines; the printer only notes an `error` for the exit code
        printer = render.TurnPrinter(lambda text, newline: None, lambda text: None)
    else:
        printer = render.TurnPrinter(_out, _note, show_progress=True)
    with client.jobs.events(job_id) as stream:
        for event in stream:
            if as_json:
                typer.echo(json.dumps({"id": event.id, **event.data}, ensure_ascii=False))
            printer.handle(event)
    printer.finish()


ReasonOption = Annotated[str | None, typer.Option("--reason", "-r", help="Why (told to the model with a denial).")]


JobArgument = Annotated[str, typer.Argument(metavar="ID", help="The job id.")]
CallArgument = Annotated[str, typer.Argument(metavar="CALL", help="The waiting call's id (`jobs show` lists them).")]


@jobs_app.command("approve")
def jobs_approve(ctx: typer.Context, job_id: JobArgument, call_id: CallArgument, reason: ReasonOption = None,
                 as_json: JsonFlag = False) -> None:  # fmt: skip
    """Let a tool call that waits for approval run; the turn goes on."""
    _decide_call(ctx, job_id, call_id, reason, as_json, approve=True)


@jobs_app.command("deny")
def jobs_deny(ctx: typer.Context, job_id: JobArgument, call_id: CallArgument, reason: ReasonOption = None,
              as_json: JsonFlag = False) -> None:  # fmt: skip
    """Refuse a tool call that waits for approval; the model is told (with the reason) and carries on."""
    _decide_call(ctx, job_id, call_id, reason, as_json, approve=False)


def _decide_call(ctx: typer.Context, job_id: str, call_id: str, reason: str | None, as_json: bool, *,
                 approve: bool) -> None:  # fmt: skip
    client = _config(ctx).client()
    result = (client.approve if approve else client.deny)(job_id, call_id, reason)
    if as_json:
        return _print_json(result)
    _echo(f"{'approved' if approve else 'denied'} call {call_id} of job {job_id}")


@jobs_app.command("cancel")
def jobs_cancel(ctx: typer.Context, job_id: Annotated[str, typer.Argument(metavar="ID", help="The job id.")],
                as_json: JsonFlag = False) -> None:  # fmt: skip
    """Cancel a queued or running turn."""
    result = _config(ctx).client().jobs.cancel(job_id)
    if as_json:
        return _print_json(result)
    if result.canceled:
        _echo(f"canceled job {job_id}")
    else:
        _echo(f"job {job_id} had already ended ({result.status})")


# -- feedback -----------------------------------------------------------------------------

SessionArgument = Annotated[str, typer.Argument(metavar="SESSION", help="The session id.")]
MessageArgument = Annotated[str, typer.Argument(metavar="MESSAGE", help="The answer's message id (msg_N; "
                                                "`sessions show` lists them).")]  # fmt: skip
CommentOption = Annotated[str | None, typer.Option("--comment", "-c", help="Why (at most 2000 characters).")]


@feedback_app.command("up")
def feedback_up(ctx: typer.Context, session_id: SessionArgument, message_id: MessageArgument,
                comment: CommentOption = None, as_json: JsonFlag = False) -> None:  # fmt: skip
    """Rate an answer of the agent up (a second rating replaces the first)."""
    _rate(ctx, session_id, message_id, "up", comment, as_json)


@feedback_app.command("down")
def feedback_down(ctx: typer.Context, session_id: SessionArgument, message_id: MessageArgument,
                  comment: CommentOption = None, as_json: JsonFlag = False) -> None:  # fmt: skip
    """Rate an answer of the agent down."""
    _rate(ctx, session_id, message_id, "down", comment, as_json)


@feedback_app.command("clear")
def feedback_clear(ctx: typer.Context, session_id: SessionArgument, message_id: MessageArgument,
                   as_json: JsonFlag = False) -> None:  # fmt: skip
    """Remove an answer's rating and comment."""
    _rate(ctx, session_id, message_id, None, None, as_json)


def _rate(ctx: typer.Context, session_id: str, message_id: str, rating: Rating | None, comment: str | None,
          as_json: bool) -> None:  # fmt: skip
    message = _config(ctx).client().feedback.set(session_id, message_id, rating, comment)
    if as_json:
        return _print_json(message)
    if rating is None:
        _echo(f"cleared the feedback on {message_id} of session {session_id}")
    else:
        _echo(f"rated {message_id} of session {session_id} {rating}")


@feedback_app.command("list")
def feedback_list(
    ctx: typer.Context,
    agent: Annotated[str | None, typer.Option("--agent", "-a", help="Only this agent's answers (name or id).")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Only ratings given at or after this time (ISO 8601, "
                                              "e.g. 2026-11-25 or 2026-11-25T14:00:00Z).")] = None,  # fmt: skip
    limit: Annotated[int, typer.Option("--limit", "-n", min=0, help="At most this many (0: all).")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """Ratings of the agents' answers, newest first."""
    found = _config(ctx).client().feedback.list(agent=agent, since=since, page_size=min(limit, 100) if limit else 100)
    ratings = list(itertools.islice(found, limit) if limit else found)
    if as_json:
        return _print_json(ratings)
    if not ratings:
        return _note("no feedback")
    rows = [(r.rating, r.session_id, r.message_id, r.updated_at, render.one_line(r.comment, 40),
             render.one_line(r.content, 50)) for r in ratings]  # fmt: skip
    _echo(render.table(("RATING", "SESSION", "MESSAGE", "RATED", "COMMENT", "ANSWER"), rows))


# -- webhooks -----------------------------------------------------------------------------

WebhookArgument = Annotated[str, typer.Argument(metavar="ID", help="The webhook id.")]


@webhooks_app.command("create")
def webhooks_create(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(metavar="URL", help="Where each event is POSTed.")],
    events: Annotated[list[WebhookEvent] | None, typer.Option("--event", "-e", help="Only this event (repeat for "
                                                              "several; all four when omitted).")] = None,  # fmt: skip
    as_json: JsonFlag = False,
) -> None:
    """Add a webhook; prints its signing secret, which is shown this once."""
    hook = _config(ctx).client().webhooks.create(url, [e.value for e in events] if events else None)
    if as_json:
        return _print_json(hook)
    _echo(render.fields([("id", hook.id), ("url", hook.url), ("events", ", ".join(hook.events)),
                         ("secret", hook.secret)]))  # fmt: skip
    _note("keep the secret: it signs every delivery (Parley-Signature) and is not shown again")


@webhooks_app.command("list")
def webhooks_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Your webhooks."""
    hooks = _config(ctx).client().webhooks.list()
    if as_json:
        return _print_json(hooks)
    if not hooks:
        return _note("no webhooks")
    _echo(render.table(("ID", "URL", "EVENTS"), [(h.id, h.url, ", ".join(h.events)) for h in hooks]))


@webhooks_app.command("show")
def webhooks_show(ctx: typer.Context, webhook_id: WebhookArgument, as_json: JsonFlag = False) -> None:
    """One webhook."""
    hook = _config(ctx).client().webhooks.get(webhook_id)
    if as_json:
        return _print_json(hook)
    _echo(render.fields(hook.model_dump(mode="json", exclude_none=True).items()))


@webhooks_app.command("delete")
def webhooks_delete(ctx: typer.Context, webhook_id: WebhookArgument) -> None:
    """Remove a webhook: nothing more is delivered to it."""
    _config(ctx).client().webhooks.delete(webhook_id)
    _echo(f"deleted webhook {webhook_id}")


@webhooks_app.command("deliveries")
def webhooks_deliveries(ctx: typer.Context, webhook_id: WebhookArgument, as_json: JsonFlag = False) -> None:
    """The webhook's recent deliveries: each event, its attempts and outcome."""
    deliveries = _config(ctx).client().webhooks.deliveries(webhook_id)
    if as_json:
        return _print_json(deliveries)
    if not deliveries:
        return _note("no deliveries yet")
    _echo(render.table(("DELIVERY", "TYPE", "JOB", "STATUS", "ATTEMPTS", "NEXT ATTEMPT"),
                       [(d.id, d.type, d.job_id, d.status, d.attempt_count, d.next_attempt_at or "-")
                        for d in deliveries]))  # fmt: skip


# -- schedules ----------------------------------------------------------------------------

ScheduleArgument = Annotated[str, typer.Argument(metavar="ID", help="The schedule id.")]


@schedules_app.command("create")
def schedules_create(
    ctx: typer.Context,
    agent: Annotated[str, typer.Option("--agent", "-a", help="The agent that answers (name or id).")],
    message: Annotated[str, typer.Option("--message", "-m", help="The message each firing sends.")],
    cron: Annotated[str | None, typer.Option("--cron", help="When: a 5-field cron expression.")] = None,
    every: Annotated[int | None, typer.Option("--every", min=1, help="When: every this many seconds.")] = None,
    session: Annotated[str | None, typer.Option("--session", "-s", help="Run in this session.")] = None,
    timezone: Annotated[str | None, typer.Option("--timezone", help="The cron's time zone (Europe/Paris).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run a turn on a schedule: exactly one of --cron and --every."""
    if (cron is None) == (every is None):
        raise typer.BadParameter("give exactly one of --cron and --every", param_hint="--cron")
    schedule = _config(ctx).client().schedules.create(agent, message, cron=cron, interval_s=every, session_id=session,
                                                      timezone=timezone)  # fmt: skip
    if as_json:
        return _print_json(schedule)
    _echo(f"created schedule {schedule.id}; next run at {schedule.next_run_at}")


@schedules_app.command("list")
def schedules_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Your schedules."""
    schedules = _config(ctx).client().schedules.list()
    if as_json:
        return _print_json(schedules)
    if not schedules:
        return _note("no schedules")
    rows = [(s.id, s.agent_id, s.cron or f"every {s.interval_s} s", s.timezone, s.next_run_at or "-", s.runs,
             render.one_line(s.message, 40)) for s in schedules]  # fmt: skip
    _echo(render.table(("ID", "AGENT", "WHEN", "TIMEZONE", "NEXT RUN", "RUNS", "MESSAGE"), rows))


@schedules_app.command("show")
def schedules_show(ctx: typer.Context, schedule_id: ScheduleArgument, as_json: JsonFlag = False) -> None:
    """One schedule, with its next run."""
    schedule = _config(ctx).client().schedules.get(schedule_id)
    if as_json:
        return _print_json(schedule)
    _echo(render.fields(schedule.model_dump(mode="json", exclude_none=True).items()))


@schedules_app.command("delete")
def schedules_delete(ctx: typer.Context, schedule_id: ScheduleArgument) -> None:
    """Remove a schedule: it fires no more."""
    _config(ctx).client().schedules.delete(schedule_id)
    _echo(f"deleted schedule {schedule_id}")


# -- usage --------------------------------------------------------------------------------


class GroupBy(StrEnum):
    """`parley usage --group-by`: the rows of `GET /api/v1/usage`."""

    day = "day"
    agent = "agent"
    session = "session"


USAGE_PAGE = 1000


@app.command("usage")
def usage(
    ctx: typer.Context,
    group_by: Annotated[GroupBy, typer.Option("--group-by", "-g", help="Rows by day (UTC), agent or session.")] = (
        GroupBy.day),
    since: Annotated[str | None, typer.Option("--since", help="First UTC day (YYYY-MM-DD or an ISO 8601 time); "
                                              "default: 29 days before --until.")] = None,  # fmt: skip
    until: Annotated[str | None, typer.Option("--until", help="Last UTC day, included; default: today.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=0, help="At most this many rows (0: all).")] = 0,
    as_json: JsonFlag = False,
) -> None:
    """Turns, tokens and (when the service has prices) cost of your tenant, from counters kept as turns commit."""
    client = _config(ctx).client()
    page = client.usage(group_by=group_by.value, since=since, until=until,
                        limit=min(limit, USAGE_PAGE) if limit else USAGE_PAGE)  # fmt: skip
    rows = list(page.data)
    while page.next_cursor and (not limit or len(rows) < limit):
        page = client.usage(group_by=group_by.value, since=since, until=until, cursor=page.next_cursor,
                            limit=min(limit - len(rows), USAGE_PAGE) if limit else USAGE_PAGE)  # fmt: skip
        rows.extend(page.data)
    if as_json:
        return _print_json(page.model_copy(update={"data": rows}).model_dump(mode="json", exclude_none=True)
                           | {"next_cursor": page.next_cursor})  # fmt: skip
    priced = page.currency is not None
    headers = [group_by.value.upper(), *(["NAME"] if group_by is GroupBy.agent else []), "TURNS", "PROMPT",
               "COMPLETION", "CACHED", *([f"COST ({page.currency})"] if priced else [])]  # fmt: skip

    def line(key: str, name: str | None, counts: Any) -> list[Any]:
        return [key, *([name or "-"] if group_by is GroupBy.agent else []), counts.turns, counts.prompt_tokens,
                counts.completion_tokens, counts.cached_tokens, *([f"{counts.cost:.6f}"] if priced else [])]

    lines = [line(row.key, row.name, row) for row in rows]
    lines.append(line("total", "", page.total))
    _echo(render.table(headers, lines))
    _note(f"{page.since} to {page.until} (UTC)" + (f"; more rows past {page.next_cursor}" if page.next_cursor else ""))
