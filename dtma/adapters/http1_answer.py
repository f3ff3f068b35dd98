"""Reading one HTTP/1.1 answer from the bytes of a connection, incrementally and within bounds.

Pure: no I/O. `AnswerReader.feed` takes the bytes as they arrive and returns the `Answer` once it
is complete; every byte is looked at once, however the stream is cut. It reads what a server
sends in answer to a POST (RFC 9112): a status line, header fields, and a body framed by
`Transfer-Encoding: chunked`, by `Content-Length`, or by the end of the connection. Interim 1xx
answers are skipped. It refuses, with `AnswerError`, what it cannot read safely: a malformed
status line or header field, a folded header field, conflicting lengths (two Content-Length
values, or one with Transfer-Encoding), a transfer or content coding other than
chunked/identity (the request asks for identity), and a head or body larger than its bounds
(chunk framing counts against the body's). A 204 or 304 that carries framing is read as
bodiless, and its connection is not reused.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_HEAD_BYTES = 64 * 1024
MAX_CHUNK_LINE_BYTES = 4 * 1024
MAX_LENGTH_DIGITS = 18  # a Content-Length beyond this is no length any bound admits
_NO_BODY = frozenset({204, 304})
_HEX = frozenset(b"0123456789abcdefABCDEF")
_TOKEN_FORBIDDEN = frozenset(b' \t"(),/:;<=>?@[\\]{}')


class AnswerError(Exception):
    """The server's answer cannot be read: malformed, unsupported, too large, or cut short."""


class AnswerTooLarge(AnswerError):
    """The answer's body is larger than the reader's bound."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]  # names lower-cased; a repeated field's values joined with ", "
    body: bytes
    reusable: bool  # whether the connection may carry another request after this answer

    @property
    def media_type(self) -> str:
        """The Content-Type without parameters, lower-cased ("" when absent)."""
        return self.headers.get("content-type", "").partition(";")[0].strip().lower()


@dataclass(frozen=True, slots=True)
class _Head:
    status: int
    headers: dict[str, str]
    keep_alive: bool


_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _TRAILERS, _TO_EOF, _DONE = range(7)


class AnswerReader:
    """Reads one answer. Not reusable: make one per request. After an `AnswerError` the
    connection's stream cannot be trusted and must be closed."""

    def __init__(self, max_body: int) -> None:
        self._max_body = max_body
        self._buffer = bytearray()
        self._pos = 0  # bytes of `_buffer` already consumed
        self._phase = _HEAD
        self._head: _Head | None = None
        self._remaining = 0  # of the Content-Length body or of the current chunk
        self._body = bytearray()  # a chunked body so far
        self._size = 0  # body bytes so far, chunk framing included
        self._reusable = True

    def feed(self, data: bytes) -> Answer | None:
        """Take the next bytes; the answer once complete, else None."""
        if self._phase == _DONE:
            raise AnswerError("bytes after the complete answer")
        if self._pos:
            del self._buffer[: self._pos]
            self._pos = 0
        self._buffer += data
        return self._advance()

    def end_of_stream(self) -> Answer:
        """The connection was closed by the server: the answer, if the end completes it."""
        if self._phase == _TO_EOF:
            return self._finish(bytes(self._buffer[self._pos :]), reusable=False)
        if self._phase == _DONE:
            raise AnswerError("the answer was already complete")
        raise AnswerError("the server closed the connection before its answer was complete")

    def _advance(self) -> Answer | None:
        while True:
            available = len(self._buffer) - self._pos
            if self._phase == _HEAD:
                if not self._read_head():
                    return None
                if self._phase == _DONE:
                    return self._finish(b"")
            elif self._phase == _LENGTH:
                if available < self._remaining:
                    return None
                end = self._pos + self._remaining
                body = bytes(self._buffer[self._pos : end])
                self._pos = end
                return self._finish(body)
            elif self._phase == _CHUNK_SIZE:
                line = self._line(MAX_CHUNK_LINE_BYTES, "chunk size line")
                if line is None:
                    return None
                size = _chunk_size(line)
                self._grow(len(line) + 2)
                if size == 0:
                    self._phase = _TRAILERS
                else:
                    self._grow(size + 2)  # and its CRLF
                    self._remaining, self._phase = size, _CHUNK_DATA
            elif self._phase == _CHUNK_DATA:
                if available < self._remaining + 2:
                    return None
                end = self._pos + self._remaining
                if self._buffer[end : end + 2] != b"\r\n":
                    raise AnswerError("a chunk does not end with CRLF")
                self._body += self._buffer[self._pos : end]
                self._pos, self._phase = end + 2, _CHUNK_SIZE
            elif self._phase == _TRAILERS:
                line = self._line(MAX_HEAD_BYTES, "trailer section")
                if line is None:
                    return None
                self._grow(len(line) + 2)
                if not line:  # the empty line that ends the trailer section
                    return self._finish(bytes(self._body))
            else:  # _TO_EOF: the body is whatever comes until the server closes
                if available > self._max_body:
                    raise AnswerTooLarge(f"the answer is larger than {self._max_body} bytes")
                return None

    def _read_head(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n", self._pos)
        if end < 0:
            if len(self._buffer) - self._pos > MAX_HEAD_BYTES:
                raise AnswerError(f"the answer's head is larger than {MAX_HEAD_BYTES} bytes")
            return False
        head = _parse_head(bytes(self._buffer[self._pos : end]))
        self._pos = end + 4
        if head.status < 200:
            if head.status == 101:
                raise AnswerError("the server switched protocols")
            if head.status < 100:
                raise AnswerError(f"invalid status code {head.status}")
            return True  # an interim answer: the final one follows
        self._head = head
        coding = head.headers.get("content-encoding", "identity").strip().lower()
        if coding not in ("", "identity"):
            raise AnswerError(f"unsupported content coding {coding!r}")
        transfer = head.headers.get("transfer-encoding")
        length = head.headers.get("content-length")
        if transfer is not None and length is not None:
            # RFC 9112, 6.3: a sign of response splitting; never read as either.
            raise AnswerError("both Transfer-Encoding and Content-Length")
        if head.status in _NO_BODY:
            self._phase = _DONE
            # Framing on an answer that has no body: whatever follows cannot be trusted.
            self._reusable = transfer is None and length is None
        elif transfer is not None:
            codings = [c.strip().lower() for c in transfer.split(",") if c.strip()]
            if codings != ["chunked"]:
                raise AnswerError(f"unsupported transfer coding {transfer!r}")
            self._phase = _CHUNK_SIZE
        elif length is not None:
            if not length.isdigit() or not length.isascii() or len(length) > MAX_LENGTH_DIGITS:
                raise AnswerError(f"invalid Content-Length {length[:40]!r}")
            self._remaining = int(length)
            self._grow(self._remaining)
            self._phase = _LENGTH
        else:
            self._phase = _TO_EOF
        return True

    def _line(self, limit: int, what: str) -> bytes | None:
        eol = self._buffer.find(b"\r\n", self._pos)
        if eol < 0:
            if len(self._buffer) - self._pos > limit:
                raise AnswerError(f"the {what} is longer than {limit} bytes")
            return None
        line = bytes(self._buffer[self._pos : eol])
        self._pos = eol + 2
        return line

    def _grow(self, size: int) -> None:
        self._size += size
        if self._size > self._max_body:
            raise AnswerTooLarge(f"the answer is larger than {self._max_body} bytes")

    def _finish(self, body: bytes, *, reusable: bool = True) -> Answer:
        assert self._head is not None
        self._phase = _DONE
        leftover = self._pos < len(self._buffer)
        return Answer(
            status=self._head.status,
            headers=self._head.headers,
            body=body,
            reusable=reusable and self._reusable and self._head.keep_alive and not leftover,
        )


def _parse_head(raw: bytes) -> _Head:
    status_line, *fields = raw.split(b"\r\n")
    version, _, rest = status_line.partition(b" ")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise AnswerError(f"not an HTTP/1.x status line: {status_line[:40]!r}")
    code = rest[:3]
    if len(code) != 3 or not code.isdigit() or rest[3:4] not in (b"", b" "):
        raise AnswerError(f"invalid status code in {status_line[:40]!r}")
    headers: dict[str, str] = {}
    for field in fields:
        name, colon, value = field.partition(b":")
        if not colon or not name or any(c in _TOKEN_FORBIDDEN or not 32 < c < 127 for c in name):
            # A leading space or tab is an obsolete line folding, refused as RFC 9112 allows.
            raise AnswerError(f"invalid header field {field[:40]!r}")
        key = name.decode("ascii").lower()
        text = value.strip(b" \t").decode("latin-1")
        known = headers.get(key)
        if known is None:
            headers[key] = text
        elif key == "content-length":
            if known != text:
                raise AnswerError("conflicting Content-Length fields")
        else:
            headers[key] = f"{known}, {text}"
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep_alive = version == b"HTTP/1.1" and "close" not in tokens
    return _Head(status=int(code), headers=headers, keep_alive=keep_alive)


def _chunk_size(line: bytes) -> int:
    digits = line.partition(b";")[0].strip(b" \t")  # chunk extensions are ignored
    if not digits or len(digits) > 16 or any(c not in _HEX for c in digits):
        raise AnswerError(f"invalid chunk size line {line[:40]!r}")
    return int(digits, 16)
