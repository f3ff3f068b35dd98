"""The `dtma` commands that talk to a running agent (everything but `serve`).

Exit codes: 0 ok; 1 an operation failed or was rolled back; 2 usage or validation error;
3 agent unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dtma.api.schemas import ApplyAcceptedOut
from dtma.cli_access import access_handlers, add_access_commands
from dtma.cli_output import print_json, print_status, table

if TYPE_CHECKING:
    # Imported by the commands when they run, not by `dtma serve`, which builds this parser but
    # never uses the client (docs/benchmarks.md, "The SDK's client side alone").
    from dtma.client import DtmaClient

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
DEFAULT_URL = "http://127.0.0.1:8750"


class UsageError(Exception):
    pass


def add_client_commands(sub: Any) -> None:
    def cmd(name: str, help_: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_)
        p.add_argument(
            "--url", default=os.environ.get("DTMA_URL", DEFAULT_URL), help="agent URL (DTMA_URL)"
        )
        p.add_argument("--json", action="store_true", help="print JSON instead of tables")
        return p

    p = cmd("apply", "apply a spec file; the toolbox id is the file name unless --id is given")
    p.add_argument("-f", "--file", required=True, type=Path)
    p.add_argument("--id", dest="toolbox")
    p.add_argument(
        "--wait",
        nargs="?",
        const=600.0,
        type=float,
        metavar="SECONDS",
        help="wait for the rollout, showing each server's progress",
    )
    cmd("ls", "list toolboxes")
    p = cmd("get", "show one toolbox")
    p.add_argument("toolbox")
    p = cmd("rollback", "roll back to the previous stable revision (or --to N)")
    p.add_argument("toolbox")
    p.add_argument("--to", type=int, dest="revision")
    p.add_argument("--wait", nargs="?", const=600.0, type=float, metavar="SECONDS")
    for kind in ("restart", "stop", "start"):
        p = cmd(kind, f"{kind} a toolbox's servers (all, or those given with --server)")
        p.add_argument("toolbox")
        p.add_argument("--server", action="append", dest="servers")
        p.add_argument("--wait", nargs="?", const=600.0, type=float, metavar="SECONDS")
    p = cmd(
        "refresh-secrets", "re-read secrets; restart (gated) only the servers whose values changed"
    )
    p.add_argument("toolbox")
    p.add_argument("--wait", nargs="?", const=600.0, type=float, metavar="SECONDS")
    p = cmd("rm", "delete a toolbox: containers, network, secret files")
    p.add_argument("toolbox")
    p.add_argument("--wait", nargs="?", const=600.0, type=float, metavar="SECONDS")
    p = cmd("logs", "a server's container log tail")
    p.add_argument("toolbox")
    p.add_argument("server")
    p.add_argument("--tail", type=int, default=100)
    p = cmd("tools", "the MCP tools each server offers")
    p.add_argument("toolbox")
    p = cmd("errors", "the error journal: deduplicated failures with hints")
    p.add_argument("--toolbox")
    p.add_argument("--category")
    p.add_argument("--open", action="store_true", help="only unresolved entries")
    cmd("adopt", "let the reaper have the orphans held at start (see GET /v1/agent)")
    p = cmd("events", "the event journal")
    p.add_argument("--toolbox")
    p.add_argument("--since", type=int, default=0)
    p.add_argument("--follow", action="store_true", help="stream live events (Ctrl-C to stop)")
    add_access_commands(sub, cmd)


def run_client_command(args: argparse.Namespace) -> int:
    from dtma.client import ApiError, Unavailable, Unreachable

    try:
        token = _token()
        return asyncio.run(_dispatch(args, token))
    except UsageError as exc:
        print(f"dtma: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Unreachable as exc:
        print(f"dtma: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except Unavailable as exc:
        print(f"dtma: the agent is unavailable: {exc.message}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except ApiError as exc:
        print(f"dtma: {exc.message} ({exc.status} {exc.code})", file=sys.stderr)
        for d in exc.details:
            print(
                f"  {'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}", file=sys.stderr
            )
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK


def _token() -> str:
    if os.environ.get("DTMA_API_TOKEN"):
        return os.environ["DTMA_API_TOKEN"]
    path = Path(
        os.environ.get("DTMA_API_TOKEN_FILE")
        or Path(os.environ.get("DTMA_STATE_DIR", ".dtma")) / "api-token"
    )
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise UsageError(
            f"no API token: set DTMA_API_TOKEN or DTMA_API_TOKEN_FILE "
            f"(tried {path}: {exc.strerror})"
        ) from None


def _client_tls() -> ssl.SSLContext | None:
    """DTMA_CACERT verifies the agent; DTMA_CLIENT_CERT/KEY answer an mTLS agent."""
    ca, cert, key = (
        os.environ.get(v) for v in ("DTMA_CACERT", "DTMA_CLIENT_CERT", "DTMA_CLIENT_KEY")
    )
    if not (ca or cert):
        return None
    try:
        context = ssl.create_default_context(cafile=ca or None)
        if cert:
            context.load_cert_chain(cert, key or None)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load TLS files: {exc}") from None
    return context


async def _dispatch(args: argparse.Namespace, token: str) -> int:
    from dtma.client import DtmaClient

    async with DtmaClient(args.url, token, ssl=_client_tls()) as client:
        handler: Callable[[DtmaClient, argparse.Namespace], Awaitable[int]] = {
            "apply": _apply,
            "ls": _ls,
            "get": _get,
            "rollback": _rollback,
            "restart": _server_op,
            "stop": _server_op,
            "start": _server_op,
            "rm": _rm,
            "refresh-secrets": _refresh_secrets,
            "logs": _logs,
            "tools": _tools,
            "events": _events,
            "errors": _errors,
            "adopt": _adopt,
            **access_handlers(),
        }[args.command]
        return await handler(client, args)


async def _apply(client: DtmaClient, args: argparse.Namespace) -> int:
    try:
        spec = args.file.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    toolbox = args.toolbox or args.file.stem
    result = await client.apply(toolbox, spec)
    if not isinstance(result, ApplyAcceptedOut):  # unchanged: nothing to roll out
        if args.json:
            print_json(result)
        else:
            print(f"{toolbox}: unchanged (revision {result.revision})")
        return EXIT_OK
    if not args.json:
        print(f"{toolbox}: revision {result.revision} submitted ({result.operation})")
    if args.wait is None:
        if args.json:
            print_json(result)
        return EXIT_OK
    return await _wait_with_progress(client, args, toolbox, result.operation)


async def _wait_with_progress(
    client: DtmaClient, args: argparse.Namespace, toolbox: str, op: str
) -> int:
    since = await _cursor_before(client, toolbox, op)

    async def follow() -> None:
        async for event in client.follow(since, toolbox):
            if event.operation not in (op, None) and event.kind != "operation_finished":
                continue
            if not args.json:
                who = f"{event.server}: " if event.server else ""
                reason = f" ({event.reason})" if event.reason else ""
                print(
                    f"  {who}{event.kind}{reason}{' - ' + event.message if event.message else ''}"
                )
            if event.kind == "operation_finished" and event.operation == op:
                return

    try:
        async with asyncio.timeout(args.wait):
            await follow()
    except TimeoutError:
        print(
            f"dtma: still running after {args.wait:g}s; see `dtma get {toolbox}`", file=sys.stderr
        )
        return EXIT_FAILED
    final = await client.operation(op)
    status = (
        await client.get(toolbox) if final.kind != "delete" or final.state != "succeeded" else None
    )
    if args.json:
        print_json(
            {
                "operation": final.model_dump(mode="json"),
                "status": status.model_dump(mode="json") if status else None,
            }
        )
    else:
        print(
            f"{toolbox}: {final.kind} {final.state}" + (f": {final.error}" if final.error else "")
        )
        if status is not None:
            print_status(status)
    return EXIT_OK if final.state == "succeeded" else EXIT_FAILED


async def _cursor_before(client: DtmaClient, toolbox: str, op: str) -> int:
    """The cursor just before the operation's first event (or the newest one if it has none)."""
    since, newest = 0, 0
    while True:
        page = await client.events(since, toolbox, 1000)
        for event in page.items:
            if event.operation == op:
                return event.cursor - 1
            newest = event.cursor
        if len(page.items) < 1000:
            return newest
        since = page.next


async def _adopt(client: DtmaClient, args: argparse.Namespace) -> int:
    out = await client.adopt()
    print(
        out.model_dump_json()
        if args.json
        else f"released to the reaper: {out.containers} "
        f"containers, {out.networks} networks (removed after DTMA_REAP_GRACE)"
    )
    return EXIT_OK


async def _ls(client: DtmaClient, args: argparse.Namespace) -> int:
    items = await client.toolboxes()
    if args.json:
        print_json([i.model_dump(mode="json") for i in items])
        return EXIT_OK
    rows = [
        (
            i.id,
            i.phase,
            i.revision,
            i.stable_revision,
            f"{sum(s.health == 'healthy' for s in i.servers)}/{len(i.servers)}",
        )
        for i in items
    ]
    print(table(rows, ["TOOLBOX", "PHASE", "REVISION", "STABLE", "HEALTHY"]))
    return EXIT_OK


async def _get(client: DtmaClient, args: argparse.Namespace) -> int:
    status = await client.get(args.toolbox)
    if args.json:
        print_json(status)
    else:
        print(status.id)
        print_status(status)
    return EXIT_OK


async def _after_submit(client: DtmaClient, args: argparse.Namespace, toolbox: str, op: str) -> int:
    if args.wait is None:
        if args.json:
            print_json({"toolbox": toolbox, "operation": op})
        else:
            print(f"{toolbox}: {args.command} submitted ({op})")
        return EXIT_OK
    return await _wait_with_progress(client, args, toolbox, op)


async def _rollback(client: DtmaClient, args: argparse.Namespace) -> int:
    ref = await client.rollback(args.toolbox, args.revision)
    return await _after_submit(client, args, args.toolbox, ref.operation)


async def _server_op(client: DtmaClient, args: argparse.Namespace) -> int:
    ref = await client.server_operation(args.toolbox, args.command, args.servers)
    return await _after_submit(client, args, args.toolbox, ref.operation)


async def _refresh_secrets(client: DtmaClient, args: argparse.Namespace) -> int:
    ref = await client.refresh_secrets(args.toolbox)
    return await _after_submit(client, args, args.toolbox, ref.operation)


async def _rm(client: DtmaClient, args: argparse.Namespace) -> int:
    ref = await client.delete(args.toolbox)
    return await _after_submit(client, args, args.toolbox, ref.operation)


async def _logs(client: DtmaClient, args: argparse.Namespace) -> int:
    sys.stdout.write(await client.logs(args.toolbox, args.server, args.tail))
    return EXIT_OK


async def _tools(client: DtmaClient, args: argparse.Namespace) -> int:
    tools = await client.tools(args.toolbox)
    if args.json:
        print_json(tools)
    else:
        print(table([(s.name, ", ".join(s.tools)) for s in tools.servers], ["SERVER", "TOOLS"]))
    return EXIT_OK


async def _events(client: DtmaClient, args: argparse.Namespace) -> int:
    def show(e: Any) -> None:
        if args.json:
            print(json.dumps(e.model_dump(mode="json"), sort_keys=True), flush=True)
        else:
            print(
                f"{e.cursor:>6}  {e.toolbox or '-':<14} {e.server or '-':<12} {e.kind}"
                f"{' (' + e.reason + ')' if e.reason else ''}"
                f"{'  ' + e.message if e.message else ''}",
                flush=True,
            )

    if args.follow:
        async for event in client.follow(args.since, args.toolbox):
            show(event)
        return EXIT_OK
    since = args.since
    while True:
        page = await client.events(since, args.toolbox, 1000)
        for event in page.items:
            show(event)
        if len(page.items) < 1000:
            return EXIT_OK
        since = page.next


async def _errors(client: DtmaClient, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {}
    if args.toolbox:
        params["toolbox"] = args.toolbox
    if args.category:
        params["category"] = args.category
    if args.open:
        params["resolved"] = "false"
    entries = await client.errors(**params)
    if args.json:
        print_json(entries)
        return EXIT_OK
    rows = [
        (
            e.category,
            e.count,
            e.toolbox,
            e.server,
            e.reason,
            "resolved" if e.resolved_at else "open",
            e.sample[:60],
            e.hint,
        )
        for e in entries.items
    ]
    print(
        table(rows, ["CATEGORY", "COUNT", "TOOLBOX", "SERVER", "REASON", "STATE", "SAMPLE", "HINT"])
    )
    return EXIT_OK
