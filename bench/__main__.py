"""``python -m bench <subcommand>``: Parley's benchmarks, one command (docs/benchmarks.md has the method and figures).

    python -m bench [turn] [--quick]     a turn's latency, streaming, throughput (the default; `make bench`)
    python -m bench load [--quick]       many turns in flight, a drain under load, rq's WorkerPool, idle streams
    python -m bench hostile [--quick]    one hostile tenant against 20 others on one worker
    python -m bench rebuild              a turn's context rebuilt from 100 vs 100,000 messages
    python -m bench redis-ceiling        turns/s one Redis (one core) carries with Parley's real mix (--quick)
    python -m bench rq-compare           RQ's Worker vs SimpleWorker vs the worker's engine, cost per no-op job
    python -m bench trace                the anatomy of a turn, from Redis MONITOR
    python -m bench profile FILE...      summarise py-spy collapsed stacks
    python -m bench cache                the share of prompt tokens served from a provider's prompt cache, 50 turns

Each starts what it measures from scratch (bench/stack.py), prints markdown and, where it has an
``--output``, writes the figures as JSON (bench/report.py).  Everything is stopped on exit, also on
Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

from . import cache, ceiling, profile, rebuild, report, rq_compare, trace, turn
from .hostile import run as hostile
from .load import run as load

SUBCOMMANDS: dict[str, ModuleType] = {
    "turn": turn, "load": load, "hostile": hostile, "rebuild": rebuild, "redis-ceiling": ceiling,
    "rq-compare": rq_compare, "trace": trace, "profile": profile, "cache": cache,
}  # fmt: skip
DEFAULT = "turn"
HELP = {
    "turn": "a turn's latency, streaming, throughput (the default; `make bench`)",
    "load": "many turns in flight, a drain under load, rq's WorkerPool, idle streams",
    "hostile": "one hostile tenant against 20 others on one worker",
    "rebuild": "a turn's context rebuilt from 100 vs 100,000 messages",
    "redis-ceiling": "turns/s one Redis (one core) carries with Parley's real command mix",
    "rq-compare": "RQ's Worker vs SimpleWorker vs the worker's engine, cost per no-op job",
    "trace": "the anatomy of a turn, from Redis MONITOR",
    "profile": "summarise py-spy collapsed stacks",
    "cache": "the share of prompt tokens served from a provider's prompt cache over a 50-turn conversation",
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    """``python -m bench [--options]`` is ``python -m bench turn [--options]``, as before subcommands."""
    if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help")):
        argv = [DEFAULT, *argv]
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n", 1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])  # fmt: skip
    subparsers = parser.add_subparsers(dest="kind", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}")
    for name, module in SUBCOMMANDS.items():
        doc = (module.__doc__ or "").strip()
        sub = subparsers.add_parser(name, prog=f"python -m bench {name}", help=HELP[name], description=doc,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
        module.add_arguments(sub)
    args = parser.parse_args(argv)
    finish: Callable[[argparse.Namespace], None] | None = getattr(SUBCOMMANDS[args.kind], "finish_arguments", None)
    if finish is not None:
        finish(args)
    args.options = {k: _plain(v) for k, v in vars(args).items() if k != "kind"}
    args.command = "python -m bench " + " ".join(argv)
    return args


def _plain(value: Any) -> Any:
    """An option's value as JSON can hold it (paths as strings)."""
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return str(value) if isinstance(value, Path) else value


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        results: dict[str, Any] = SUBCOMMANDS[args.kind].run(args)
    except KeyboardInterrupt:
        print(f"bench {args.kind}: interrupted; every process it started has been stopped", file=sys.stderr)
        return 130
    report.write(args.kind, results, args.output)
    return 0 if results.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
