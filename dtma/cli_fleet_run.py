"""`dtma fleet status|apply|rm` carried out (the parser and the exit codes: dtma/cli_fleet.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from dtma.cli_fleet import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE
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


class _Usage(Exception):
    pass


def run_fleet(args: argparse.Namespace) -> int:
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
