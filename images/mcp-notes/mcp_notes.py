"""mcp-notes: a small streamable-HTTP MCP server used as dtma's example and test target.

It keeps notes in memory and serves them at http://0.0.0.0:$PORT$MCP_PATH (default 8000, /mcp).

FAIL_MODE makes it misbehave on purpose, so that health gates and restarts can be tested against
a real server:
  exit_at_start       exit with status 1 before listening
  hang_initialize     accept connections but never answer the handshake of either era
                      (`initialize`, or 2026-07-28's `server/discover`)
  crash_after:<s>     serve normally, then exit with status 3 after <s> seconds
  drop_tool:<name>    serve without the tool <name>
  slow_start:<s>      wait <s> seconds before listening (or before reading stdin)
  error_env:<ITEMS>   answer `tools/list` with a JSON-RPC error whose message carries ITEMS
An unknown FAIL_MODE is a configuration error: exit status 2 with a message.
MCP_TRANSPORT=stdio serves the same tools over stdin/stdout instead of HTTP.
LOG_HANDSHAKES=1 prints one line to stderr per handshake request it receives (`initialize` or
`server/discover`): a client's new sessions, counted from outside (`docker logs`).
PRINT_AT_START=<ITEMS> prints ITEMS to stdout and stderr first (before any FAIL_MODE acts).
ITEMS is a comma-separated list of environment variable names and /file/paths, standing for
their values: with secrets, these make a server that leaks them, for dtma's redaction tests.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from mcp.server.mcpserver import MCPServer

TOOL_NAMES = ("add_note", "list_notes", "get_note", "delete_note", "search_notes")


@dataclass(frozen=True)
class FailMode:
    kind: str = ""
    arg: str = ""

    @classmethod
    def parse(cls, raw: str) -> FailMode:
        raw = raw.strip()
        if not raw:
            return cls()
        kind, _, arg = raw.partition(":")
        if kind in ("exit_at_start", "hang_initialize") and not arg:
            return cls(kind)
        if kind in ("crash_after", "slow_start"):
            try:
                seconds = float(arg)
            except ValueError:
                raise ValueError(
                    f"FAIL_MODE={raw!r}: {kind} needs seconds, e.g. {kind}:5"
                ) from None
            if seconds < 0:
                raise ValueError(f"FAIL_MODE={raw!r}: seconds must be >= 0")
            return cls(kind, arg)
        if kind == "error_env" and arg:
            return cls(kind, arg)
        if kind == "drop_tool" and arg:
            if arg not in TOOL_NAMES:
                raise ValueError(
                    f"FAIL_MODE={raw!r}: unknown tool; tools are {', '.join(TOOL_NAMES)}"
                )
            return cls(kind, arg)
        raise ValueError(
            f"FAIL_MODE={raw!r} is not one of exit_at_start, hang_initialize, crash_after:<s>, "
            "drop_tool:<name>, slow_start:<s>, error_env:<NAME>"
        )


class NoteStore:
    """In-memory notes; one process, one store."""

    def __init__(self) -> None:
        self._notes: dict[int, dict[str, str]] = {}
        self._ids = itertools.count(1)

    def add(self, title: str, body: str) -> int:
        note_id = next(self._ids)
        self._notes[note_id] = {"title": title, "body": body}
        return note_id

    def all(self) -> list[dict[str, Any]]:
        return [{"id": i, "title": n["title"]} for i, n in sorted(self._notes.items())]

    def get(self, note_id: int) -> dict[str, Any]:
        if note_id not in self._notes:
            raise ValueError(f"no note with id {note_id}")
        return {"id": note_id, **self._notes[note_id]}

    def delete(self, note_id: int) -> bool:
        return self._notes.pop(note_id, None) is not None

    def search(self, query: str) -> list[dict[str, Any]]:
        q = query.lower()
        return [
            {"id": i, "title": n["title"]}
            for i, n in sorted(self._notes.items())
            if q in n["title"].lower() or q in n["body"].lower()
        ]


def build_server(mode: FailMode) -> MCPServer:
    # WARNING: health probes open a session every few seconds; at INFO each one is a log line.
    server = MCPServer("mcp-notes", version="1.0.0", log_level="WARNING")
    store = NoteStore()

    def add_note(title: str, body: str = "") -> int:
        """Store a note and return its id."""
        return store.add(title, body)

    def list_notes() -> list[dict[str, Any]]:
        """List every note's id and title."""
        return store.all()

    def get_note(note_id: int) -> dict[str, Any]:
        """Return one note with its body."""
        return store.get(note_id)

    def delete_note(note_id: int) -> bool:
        """Delete a note; true if it existed."""
        return store.delete(note_id)

    def search_notes(query: str) -> list[dict[str, Any]]:
        """Find notes whose title or body contains the query (case-insensitive)."""
        return store.search(query)

    for fn in (add_note, list_notes, get_note, delete_note, search_notes):
        if not (mode.kind == "drop_tool" and mode.arg == fn.__name__):
            server.add_tool(fn)
    return server


class HangOnInitialize:
    """ASGI wrapper that swallows handshake requests (`initialize`, `server/discover`): the
    connection stays open, no answer."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        if _is_initialize(body):
            await asyncio.Event().wait()  # never set: hang until the client gives up
        await self.app(scope, _replay(body, receive), send)


class LogHandshakes:
    """ASGI wrapper that prints `mcp-notes: handshake <method>` to stderr for each handshake
    request, then serves it as usual."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        for method in ("initialize", "server/discover"):
            if _request_for(body, method) is not None:
                print(f"mcp-notes: handshake {method}", file=sys.stderr, flush=True)
        await self.app(scope, _replay(body, receive), send)


class ErrorOnToolsList:
    """ASGI wrapper that answers `tools/list` with a JSON-RPC error carrying `message`."""

    def __init__(self, app: Any, message: str) -> None:
        self.app = app
        self.message = message

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        request = _request_for(body, "tools/list")
        if request is None:
            await self.app(scope, _replay(body, receive), send)
            return
        answer = {
            "jsonrpc": "2.0",
            "id": request.get("id"),
            "error": {"code": -32603, "message": self.message},
        }
        data = json.dumps(answer).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": data})


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Any:
    replayed = False

    async def replay() -> Any:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _request_for(body: bytes, method: str) -> dict[str, Any] | None:
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    items = payload if isinstance(payload, list) else [payload]
    return next((m for m in items if isinstance(m, dict) and m.get("method") == method), None)


def _is_initialize(body: bytes) -> bool:
    return any(_request_for(body, m) is not None for m in ("initialize", "server/discover"))


def leaked_values(items: str) -> str:
    """The values of comma-separated env names and /file/paths, one after the other."""
    out = []
    for item in filter(None, (i.strip() for i in items.split(","))):
        if item.startswith("/"):
            try:
                with open(item) as f:
                    out.append(f.read())
            except OSError as exc:
                out.append(f"<{item}: {exc.strerror}>")
        else:
            out.append(os.environ.get(item, ""))
    return "\n".join(out)


def main() -> None:
    if os.environ.get("PRINT_AT_START"):
        leaked = leaked_values(os.environ["PRINT_AT_START"])
        print(leaked, flush=True)
        print(leaked, file=sys.stderr, flush=True)
    try:
        mode = FailMode.parse(os.environ.get("FAIL_MODE", ""))
    except ValueError as exc:
        print(f"mcp-notes: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    port = int(os.environ.get("PORT", "8000"))
    path = os.environ.get("MCP_PATH", "/mcp")

    if mode.kind == "exit_at_start":
        print("mcp-notes: FAIL_MODE=exit_at_start, exiting", file=sys.stderr, flush=True)
        sys.exit(1)
    if mode.kind == "slow_start":
        print(f"mcp-notes: FAIL_MODE=slow_start, waiting {mode.arg}s", file=sys.stderr, flush=True)
        time.sleep(float(mode.arg))
    if mode.kind == "crash_after":

        def crash() -> None:
            print(
                f"mcp-notes: FAIL_MODE=crash_after:{mode.arg}, crashing",
                file=sys.stderr,
                flush=True,
            )
            os._exit(3)

        threading.Timer(float(mode.arg), crash).start()

    if os.environ.get("MCP_TRANSPORT") == "stdio":
        print("mcp-notes: serving on stdio", file=sys.stderr, flush=True)
        build_server(mode).run("stdio")
        return

    import uvicorn

    app: Any = build_server(mode).streamable_http_app(streamable_http_path=path, host="0.0.0.0")
    if mode.kind == "hang_initialize":
        app = HangOnInitialize(app)
    if mode.kind == "error_env":
        app = ErrorOnToolsList(app, f"tools unavailable: {leaked_values(mode.arg)}")
    if os.environ.get("LOG_HANDSHAKES") == "1":
        app = LogHandshakes(app)
    # Listening before saying so: tests wait for this line, then connect at once (printed before
    # uvicorn bound its socket, a loaded machine refused that connection now and then).
    listener = socket.create_server(("0.0.0.0", port), backlog=128)
    print(
        f"mcp-notes: serving on 0.0.0.0:{port}{path} (FAIL_MODE={mode.kind or 'none'})",
        file=sys.stderr,
        flush=True,
    )
    # A bounded graceful shutdown: a request hung on purpose (hang_initialize) must not keep
    # Ctrl-C or `docker stop` waiting.
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
    uvicorn.Server(config).run(sockets=[listener])


if __name__ == "__main__":
    main()
