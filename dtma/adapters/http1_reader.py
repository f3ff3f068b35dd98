"""Reading one HTTP/1.1 answer from the bytes of a connection, incrementally and within bounds.

Pure: no I/O. The bytes are parsed by llhttp (through `httptools`, the parser uvicorn uses);
this module only adds what the relay asks of an answer from an untrusted server, on top of what
llhttp already refuses (a malformed status line or header field, a folded header field, two
Content-Length fields, Content-Length beside Transfer-Encoding, bad chunk framing, a bare LF):
- interim 1xx answers are skipped, and a 101 (a switch of protocols) is refused;
- a version other than HTTP/1.0 or 1.1 is refused (llhttp reads 0.9 and 2.0 status lines too);
- a transfer coding other than exactly `chunked`, or a content coding other than identity (the
  request asks for identity), is refused;
- bounds: the heads (interim answers and trailer fields included) within `max_head` bytes, a
  body within `max_body` (a larger Content-Length is refused before any of the body is read),
  and all the bytes of the answer, chunk framing included, within `max_head + max_body`;
- trailer fields are not kept;
- a 204 or 304 that carries framing is read as bodiless, and its connection is not reused;
- bytes after the complete answer leave its connection out of step: the answer stands, the
  connection is not reused (llhttp alone skips empty lines between answers).
llhttp reads a status line that names RTSP/ or ICE/ in place of HTTP/ like an HTTP/1.x one:
its framing is HTTP's, so nothing unsafe follows; such an answer is never reused unless it says
1.1 and keep-alive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

import httptools

MAX_HEAD_BYTES = 64 * 1024
_NO_BODY = frozenset({204, 304})
_FIELD_OVERHEAD = 4  # ": " and CRLF around a header field's name and value


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


class _Stop(Exception):
    """Raised inside a parser callback to stop llhttp; the reason is kept in `_error`."""


class AnswerReader:
    """Reads one answer. Not reusable: make one per request. After an `AnswerError` the
    connection's stream cannot be trusted and must be closed. The llhttp callbacks below run
    inside `feed` only."""

    def __init__(self, max_body: int, *, max_head: int = MAX_HEAD_BYTES) -> None:
        self._max_body = max_body
        self._max_head = max_head
        self._parser = httptools.HttpResponseParser(self)
        self._fed = 0  # bytes fed so far, every head and all framing included
        self._head_size = 0  # of the heads and trailers so far, as the callbacks see them
        self._headers: dict[str, str] = {}
        self._status = 0
        self._final = False  # the final (non-1xx) head is complete
        self._to_eof = False  # its body is whatever comes until the server closes
        self._reusable = True
        self._chunks: list[bytes] = []
        self._size = 0  # body bytes so far
        self._answer: Answer | None = None
        self._error: AnswerError | None = None

    def feed(self, data: bytes) -> Answer | None:
        """Take the next bytes; the answer once complete, else None. Raises AnswerError."""
        if self._answer is not None:
            raise AnswerError("bytes after the complete answer")
        self._fed += len(data)
        if self._fed > self._max_head + self._max_body:
            raise AnswerTooLarge(
                f"the answer is larger than {self._max_body} bytes"
                f" (and {self._max_head} of head), framing included"
            )
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if self._answer is not None:
                # Bytes after a complete answer (stopped in on_message_begin, or refused by
                # llhttp): the answer stands, its connection is out of step.
                return self._out_of_step(self._answer)
            if self._error is not None:
                raise self._error from None
            raise AnswerError(f"malformed answer: {exc}") from None
        if self._answer is not None:
            return self._answer
        if not self._final and self._fed > self._max_head:
            raise AnswerError(f"the answer's head is larger than {self._max_head} bytes")
        return None

    def end_of_stream(self) -> Answer:
        """The connection was closed by the server: the answer, if the end completes it."""
        if self._answer is not None:
            raise AnswerError("the answer was already complete")
        if self._to_eof and self._error is None:
            return self._finish(reusable=False)
        raise AnswerError("the server closed the connection before its answer was complete")

    # llhttp's callbacks

    def on_message_begin(self) -> None:
        if self._answer is not None:
            raise _Stop  # a second answer nobody asked for: stop before reading it

    def on_status(self, reason: bytes) -> None:
        self._grow_head(len(reason) + 16)  # and "HTTP/1.1 200 " and CRLF

    def on_header(self, name: bytes, value: bytes) -> None:
        self._grow_head(len(name) + len(value) + _FIELD_OVERHEAD)
        if self._final:
            return  # a trailer field: bounded with the head, not kept
        key = name.decode("latin-1").lower()  # llhttp admits only token characters
        text = value.strip(b" \t").decode("latin-1")
        known = self._headers.get(key)
        self._headers[key] = text if known is None else f"{known}, {text}"

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 100:
            self._fail(AnswerError(f"invalid status code {status}"))
        if status == 101:
            self._fail(AnswerError("the server switched protocols"))
        version = self._parser.get_http_version()
        if version not in ("1.1", "1.0"):
            self._fail(AnswerError(f"not an HTTP/1.x answer (version {version})"))
        if status < 200:
            return  # an interim answer: llhttp completes it bodiless, the final one follows
        self._status, self._final = status, True
        headers = self._headers
        coding = headers.get("content-encoding", "identity").strip().lower()
        if coding not in ("", "identity"):
            self._fail(AnswerError(f"unsupported content coding {coding!r}"))
        transfer, length = headers.get("transfer-encoding"), headers.get("content-length")
        if status in _NO_BODY:
            # llhttp reads it bodiless; whatever framing it announced cannot be trusted.
            self._reusable = transfer is None and length is None
        elif transfer is not None:
            codings = [c.strip().lower() for c in transfer.split(",") if c.strip()]
            if codings != ["chunked"]:
                self._fail(AnswerError(f"unsupported transfer coding {transfer!r}"))
        elif length is not None:
            if int(length) > self._max_body:  # llhttp checked its digits
                self._fail(AnswerTooLarge(f"the answer is larger than {self._max_body} bytes"))
        else:
            self._to_eof = True
        self._reusable = self._reusable and version == "1.1" and self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._max_body:
            self._fail(AnswerTooLarge(f"the answer is larger than {self._max_body} bytes"))
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        if not self._final:  # an interim answer's end
            self._headers = {}
            return
        self._answer = self._finish(reusable=self._reusable)

    # helpers

    def _grow_head(self, size: int) -> None:
        self._head_size += size
        if self._head_size > self._max_head:
            self._fail(AnswerError(f"the answer's head is larger than {self._max_head} bytes"))

    def _fail(self, error: AnswerError) -> NoReturn:
        self._error = error
        raise _Stop

    def _finish(self, *, reusable: bool) -> Answer:
        self._answer = Answer(
            status=self._status,
            headers=self._headers,
            body=b"".join(self._chunks),
            reusable=reusable,
        )
        return self._answer

    @staticmethod
    def _out_of_step(answer: Answer) -> Answer:
        return Answer(answer.status, answer.headers, answer.body, reusable=False)
