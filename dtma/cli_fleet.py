"""`dtma fleet status|apply|rm`: the fleet client's commands, over fleet.yaml (dtma.fleet).

Exit codes: 0 ok; 1 a rollout halted (a gate failed, an agent errored) or a removal failed;
2 usage: a bad fleet file, selector or spec file, or no agent selected; 3 an agent was
unreachable (status: any agent without a status answer; rm: an agent unreachable).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from dtma.cli_output import table
from dtma.fleet import (
    AgentSource,
    Connection,
    FleetAgent,
    FleetFile,
    FleetFileError,
    FleetRollout,
    Progress,
    RolloutOptions,
    fleet_remove,
    fleet_status,
    parse_selectors,
    select,
)
from dtma.fleet.status import serving

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


class _Usage(Exception):
    pass


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def _non_negative(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return n


def _seconds(value: str) -> float:
    n = float(value)
    if not 0 < n <= 3600:
        raise argparse.ArgumentTypeError("must be between 0 and 3600 seconds")
    return n


def add_fleet_commands(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-F",
        "--fleet",
        type=Path,
        default=Path(os.environ.get("DTMA_FLEET", "fleet.yaml")),
        help="the fleet file (DTMA_FLEET; default ./fleet.yaml)",
    )
    common.add_argument(
        "--selector",
        action="append",
        metavar="KEY=VALUE",
        help="only agents with this label (repeat: all must match)",
    )
    common.add_argument("--parallel", type=_positive, default=16, help="agents called at once (16)")
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    fleet = sub.add_parser("fleet", help="many agents at once, over fleet.yaml")
    actions = fleet.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = actions.add_parser(
        "status", parents=[common], help="one row per agent; exit 3 if any did not answer"
    )
    p.add_argument("--toolbox", help="also show this toolbox's revision and phase")
    p.add_argument("--timeout", type=_seconds, default=10.0, help="per agent, seconds (10)")
    p = actions.add_parser(
        "apply", parents=[common], help="gated rollout: canaries one by one, then batches"
    )
    p.add_argument("-f", "--file", required=True, type=Path, help="the toolbox spec")
    p.add_argument("--id", dest="toolbox", help="toolbox id (default: the spec file's name)")
    p.add_argument("--canary", type=_non_negative, default=1, help="agents first, one by one (1)")
    p.add_argument("--batch", type=_positive, default=10, help="agents per batch after (10)")
    p.add_argument(
        "--rollback-on-failure",
        action="store_true",
        help="on a halt, roll the agents this run updated back to their previous revision",
    )
    p.add_argument(
        "--timeout", type=_seconds, default=600.0, help="per agent rollout, seconds (600)"
    )
    p = actions.add_parser("rm", parents=[common], help="delete a toolbox on every agent")
    p.add_argument("--id", dest="toolbox", required=True)
    p.add_argument("--timeout", type=_seconds, default=120.0, help="per agent, seconds (120)")


def run_fleet_command(args: argparse.Namespace) -> int:
    from dtma.cli_client import UsageError, _client_tls

    try:
        selector = parse_selectors(args.selector)
        conn = Connection(ssl=_client_tls())
        return asyncio.run(_main(args, _source(args), selector, conn))
    except FleetFileError as exc:
        for line in exc.lines():
            print(f"dtma: {line}" if not line.startswith(" ") else line, file=sys.stderr)
        return EXIT_USAGE
    except (_Usage, UsageError) as exc:
        print(f"dtma: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(
            "dtma: interrupted; rollouts the agents accepted go on (re-run to resume)",
            file=sys.stderr,
        )
        return EXIT_FAILED


def _source(args: argparse.Namespace) -> AgentSource:
    """Where the agents come from: the one place a controller-backed AgentSource would be
    chosen (no controller API lists agents yet; docs/fleet.md)."""
    return FleetFile(args.fleet)


async def _main(
    args: argparse.Namespace, source: AgentSource, selector: dict[str, str], conn: Connection
) -> int:
    agents = select(await source.agents(), selector)
    if not agents:
        wanted = ",".join(f"{k}={v}" for k, v in selector.items())
        raise _Usage(f"no agent in {args.fleet} matches the selector {wanted}")
    handler = {"status": _status, "apply": _apply, "rm": _rm}[args.action]
    return await handler(args, agents, conn)


async def _status(args: argparse.Namespace, agents: list[FleetAgent], conn: Connection) -> int:
    rows = await fleet_status(agents, conn, parallel=args.parallel, timeout=args.timeout)
    if args.json:
        print(json.dumps([r.as_json(args.toolbox) for r in rows], indent=2, sort_keys=True))
    else:
        headers = ["AGENT", "URL", "REACHABLE", "TOOLBOXES", "PHASES"]
        if args.toolbox:
            headers += ["REVISION", "PHASE"]
        body = []
        for r in rows:
            phases = ",".join(f"{k}={v}" for k, v in r.phases().items())
            row: list[Any] = [
                r.agent.name,
                r.agent.url,
                "yes" if r.reachable else "no",
                len(r.toolboxes) if r.error is None else None,
                phases or None,
            ]
            if args.toolbox:
                tb = r.toolbox(args.toolbox)
                row += [serving(tb), tb.phase] if tb else [None, "absent" if not r.error else None]
            body.append([*row, r.error])
        print(table(body, [*headers, "ERROR"]))
    return EXIT_UNREACHABLE if any(r.error for r in rows) else EXIT_OK


async def _apply(args: argparse.Namespace, agents: list[FleetAgent], conn: Connection) -> int:
    try:
        spec = args.file.read_bytes()
    except OSError as exc:
        raise _Usage(f"cannot read {args.file}: {exc.strerror}") from None
    toolbox = args.toolbox or args.file.stem
    options = RolloutOptions(
        toolbox=toolbox,
        spec=spec,
        canary=args.canary,
        batch=args.batch,
        parallel=args.parallel,
        timeout=args.timeout,
        rollback_on_failure=args.rollback_on_failure,
    )

    def show(p: Progress) -> None:
        if args.json:
            print(json.dumps(_progress_json(p), sort_keys=True), flush=True)
        else:
            print(p.text if p.kind in ("wave", "halt", "done") else f"  {p.text}", flush=True)

    if not args.json:
        print(
            f"fleet apply {toolbox}: {len(agents)} agents, canary {args.canary}, "
            f"batch {args.batch}",
            flush=True,
        )
    report = await FleetRollout(options, conn, show).run(agents)
    return EXIT_OK if report.ok and all(r.ok for r in report.reverts) else EXIT_FAILED


def _progress_json(p: Progress) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": p.kind, "text": p.text, "wave": p.wave}
    if p.result is not None:
        r = p.result
        out.update(
            agent=r.agent.name,
            outcome=r.outcome,
            before=r.before,
            after=r.after,
            state=r.state,
            message=r.message,
            seconds=r.seconds,
        )
    if p.revert is not None:
        out.update(agent=p.revert.agent.name, ok=p.revert.ok, message=p.revert.message)
    return out


async def _rm(args: argparse.Namespace, agents: list[FleetAgent], conn: Connection) -> int:
    results = await fleet_remove(
        agents, args.toolbox, conn, parallel=args.parallel, timeout=args.timeout
    )
    if args.json:
        print(
            json.dumps(
                [
                    {"agent": r.agent.name, "outcome": r.outcome, "message": r.message}
                    for r in results
                ],
                indent=2,
            )
        )
    else:
        print(
            table(
                [(r.agent.name, r.outcome, r.message or None) for r in results],
                ["AGENT", "RESULT", "ERROR"],
            )
        )
    if any(r.outcome == "failed" for r in results):
        return EXIT_FAILED
    return EXIT_UNREACHABLE if any(r.outcome == "unreachable" for r in results) else EXIT_OK
