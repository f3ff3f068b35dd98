"""`dtma token create|ls|rm`, `dtma mcp-url` and `dtma calls`: access to a toolbox's MCP
endpoint and its call journal. Same exit codes as the other client commands (cli_client.py)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from dtma.cli_output import print_json, table

if TYPE_CHECKING:
    from dtma.client import DtmaClient  # the commands get one; `dtma serve` never loads it

EXIT_OK = 0
Handler = Callable[["DtmaClient", argparse.Namespace], Awaitable[int]]


def add_access_commands(sub: Any, cmd: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Register the commands; `cmd(name, help)` makes a parser with --url and --json."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", default=os.environ.get("DTMA_URL", "http://127.0.0.1:8750"), help="agent URL"
    )
    common.add_argument("--json", action="store_true", help="print JSON instead of tables")
    token = sub.add_parser("token", help="client tokens of a toolbox's MCP endpoint")
    actions = token.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = actions.add_parser(
        "create", parents=[common], help="issue a token; prints its value (shown only once)"
    )
    p.add_argument("toolbox")
    p.add_argument("--name", help="a label for the token (printable ASCII, up to 64)")
    p = actions.add_parser("ls", parents=[common], help="list a toolbox's tokens (no values)")
    p.add_argument("toolbox")
    p = actions.add_parser("rm", parents=[common], help="revoke a token at once")
    p.add_argument("toolbox")
    p.add_argument("token_id")
    p = cmd("mcp-url", "the URL of a toolbox's MCP endpoint")
    p.add_argument("toolbox")
    p = cmd("calls", "a toolbox's tool-call journal")
    p.add_argument("toolbox")
    p.add_argument("--since", type=int, default=0, help="cursor to start after")
    p.add_argument("--limit", type=int, default=500, help="page size (1-1000)")


def access_handlers() -> dict[str, Handler]:
    return {"token": _token, "mcp-url": _mcp_url, "calls": _calls}


def _when(ts: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts is not None else None


async def _token(client: DtmaClient, args: argparse.Namespace) -> int:
    if args.action == "create":
        created = await client.create_token(args.toolbox, args.name)
        if args.json:
            print_json(created)
        else:
            print(created.token)
            print(
                f"dtma: token {created.id} for toolbox {created.toolbox}: its value is shown "
                "only this once; keep it now",
                file=sys.stderr,
            )
        return EXIT_OK
    if args.action == "ls":
        tokens = await client.tokens(args.toolbox)
        if args.json:
            print_json(tokens)
        else:
            rows = [(t.id, t.name, _when(t.created_at), _when(t.last_used)) for t in tokens.items]
            print(table(rows, ["ID", "NAME", "CREATED", "LAST USED"]))
        return EXIT_OK
    await client.revoke_token(args.toolbox, args.token_id)
    if args.json:
        print_json({"id": args.token_id, "revoked": True})
    else:
        print(f"{args.toolbox}: token {args.token_id} revoked")
    return EXIT_OK


async def _mcp_url(client: DtmaClient, args: argparse.Namespace) -> int:
    await client.get(args.toolbox)  # 404 for an unknown toolbox
    url = f"{client.base_url}/v1/toolboxes/{args.toolbox}/mcp"
    print_json({"url": url}) if args.json else print(url)
    return EXIT_OK


async def _calls(client: DtmaClient, args: argparse.Namespace) -> int:
    page = await client.calls(args.toolbox, args.since, args.limit)
    if args.json:
        print_json(page)
        return EXIT_OK
    rows = [
        (
            c.cursor,
            _when(c.ts),
            c.server,
            c.tool,
            f"{c.token}:{c.subject}" if c.subject else c.token,  # oauth:<sub> for a JWT
            c.outcome,
            f"{c.duration * 1000:.1f}",
            c.request_bytes,
            c.response_bytes,
        )
        for c in page.items
    ]
    headers = ["CURSOR", "TIME", "SERVER", "TOOL", "TOKEN", "OUTCOME", "MS", "IN", "OUT"]
    print(table(rows, headers))
    return EXIT_OK
