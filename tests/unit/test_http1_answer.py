"""Reading an HTTP/1.1 answer (adapters/http1_answer.py): every framing, however the bytes are
cut, and a clear refusal of what cannot be read safely."""

from __future__ import annotations

import pytest

from dtma.adapters.http1_answer import MAX_HEAD_BYTES, Answer, AnswerError, AnswerReader

MAX_BODY = 1024


def read(raw: bytes, *, cuts: str = "whole", end: bool = False) -> Answer:
    """Feed `raw` whole or byte by byte; `end`: then the server closes the connection."""
    reader = AnswerReader(MAX_BODY)
    pieces = [raw] if cuts == "whole" else [raw[i : i + 1] for i in range(len(raw))]
    for piece in pieces:
        answer = reader.feed(piece)
        if answer is not None:
            return answer
    if end:
        return reader.end_of_stream()
    raise AssertionError("the answer was not complete")


@pytest.mark.parametrize("cuts", ["whole", "bytes"])
def test_a_content_length_body(cuts: str) -> None:
    raw = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{"a":1}'
    answer = read(raw, cuts=cuts)
    assert (answer.status, answer.body, answer.reusable) == (200, b'{"a":1}', True)
    assert answer.media_type == "application/json"


@pytest.mark.parametrize("cuts", ["whole", "bytes"])
def test_a_chunked_body_with_extensions_and_trailers(cuts: str) -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: text/event-stream; charset=utf-8\r\n\r\n"
        b"5;name=value\r\nevent\r\n"
        b"A\r\n: 0123456\n\r\n"
        b"0\r\nX-Trailer: yes\r\n\r\n"
    )
    answer = read(raw, cuts=cuts)
    assert answer.body == b"event: 0123456\n"
    assert answer.media_type == "text/event-stream"
    assert answer.reusable


def test_a_body_that_ends_with_the_connection() -> None:
    reader = AnswerReader(MAX_BODY)
    assert reader.feed(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nsome ") is None
    assert reader.feed(b"text") is None
    answer = reader.end_of_stream()
    assert (answer.body, answer.reusable) == (b"some text", False)


def test_interim_answers_are_skipped() -> None:
    raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: x\r\n\r\n" + (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    assert read(raw).body == b"ok"


@pytest.mark.parametrize("status", [204, 304])
def test_answers_without_a_body(status: int) -> None:
    answer = read(f"HTTP/1.1 {status} X\r\n\r\n".encode())
    assert (answer.status, answer.body, answer.reusable) == (status, b"", True)
    # Framing on a bodiless answer: whatever follows is not trusted on that connection.
    answer = read(f"HTTP/1.1 {status} X\r\nContent-Length: 10\r\n\r\n".encode())
    assert (answer.status, answer.body, answer.reusable) == (status, b"", False)


@pytest.mark.parametrize(
    ("raw", "reusable"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nextra", False),  # out of step
        (b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n", True),
    ],
)
def test_when_the_connection_may_be_reused(raw: bytes, reusable: bool) -> None:
    assert read(raw).reusable is reusable


def test_repeated_fields_are_joined_and_names_lower_cased() -> None:
    raw = b"HTTP/1.1 200 OK\r\nX-A: 1\r\nx-a: 2\r\nContent-Length:0\r\n\r\n"
    assert read(raw).headers["x-a"] == "1, 2"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"HTTP/2 200 OK\r\n\r\n", "not an HTTP/1.x status line"),
        (b"ICY 200 OK\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 2x0 OK\r\n\r\n", "invalid status code"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "invalid status code"),
        (b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\n\r\n", "invalid header field"),
        (b"HTTP/1.1 200 OK\r\nBad Name: 1\r\n\r\n", "invalid header field"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "invalid header field"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx", "conflicting"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1_0\r\n\r\n", "invalid Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "transfer coding"),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 0\r\n\r\n", "coding"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY", "CRLF"),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "switched protocols"),
        (b"HTTP/1.1 099 Odd\r\n\r\n", "invalid status code"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            "both Transfer-Encoding and Content-Length",
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n", "Content-Length"),
    ],
)
def test_what_cannot_be_read_safely_is_refused(raw: bytes, reason: str) -> None:
    with pytest.raises(AnswerError, match=reason):
        read(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1025\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n"
        + b"x" * 1024
        + b"\r\n1\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 1025,
        # 200 bytes of data in 1-byte chunks: the framing counts against the bound too
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1\r\nx\r\n" * 200,
    ],
)
def test_a_body_over_the_bound_is_refused_before_it_is_kept(raw: bytes) -> None:
    with pytest.raises(AnswerError, match="larger than 1024 bytes"):
        read(raw, end=True)


def test_a_head_over_the_bound_is_refused() -> None:
    reader = AnswerReader(MAX_BODY)
    pad = b"X-Pad: " + b"p" * 991 + b"\r\n"
    for _ in range(MAX_HEAD_BYTES // len(pad)):
        assert reader.feed(pad if _ else b"HTTP/1.1 200 OK\r\n" + pad) is None
    with pytest.raises(AnswerError, match="head is larger"):
        reader.feed(pad)


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Len",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    ],
)
def test_an_answer_cut_short_by_the_server_is_an_error(raw: bytes) -> None:
    reader = AnswerReader(MAX_BODY)
    assert reader.feed(raw) is None
    with pytest.raises(AnswerError, match="closed the connection before"):
        reader.end_of_stream()


def test_bytes_after_a_complete_answer_are_refused() -> None:
    reader = AnswerReader(MAX_BODY)
    assert reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n") is not None
    with pytest.raises(AnswerError, match="after the complete answer"):
        reader.feed(b"HTTP/1.1 200 OK\r\n")
