"""Reading an HTTP/1.1 answer (adapters/http1_reader.py: llhttp, through httptools): every
framing, however the bytes are cut, and a clear refusal of what cannot be read safely."""

from __future__ import annotations

import pytest

from dtma.adapters.http1_reader import (
    MAX_HEAD_BYTES,
    Answer,
    AnswerError,
    AnswerReader,
    AnswerTooLarge,
)

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
    assert "x-trailer" not in answer.headers  # trailer fields are not kept
    assert answer.reusable


def test_a_body_that_ends_with_the_connection() -> None:
    reader = AnswerReader(MAX_BODY)
    assert reader.feed(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nsome ") is None
    assert reader.feed(b"text") is None
    answer = reader.end_of_stream()
    assert (answer.body, answer.reusable) == (b"some text", False)


@pytest.mark.parametrize("cuts", ["whole", "bytes"])
def test_interim_answers_are_skipped(cuts: str) -> None:
    raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: x\r\n\r\n" + (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    assert read(raw, cuts=cuts).body == b"ok"


@pytest.mark.parametrize("cuts", ["whole", "bytes"])
@pytest.mark.parametrize("status", [204, 304])
def test_answers_without_a_body(status: int, cuts: str) -> None:
    answer = read(f"HTTP/1.1 {status} X\r\n\r\n".encode(), cuts=cuts)
    assert (answer.status, answer.body, answer.reusable) == (status, b"", True)
    # Framing on a bodiless answer: whatever follows is not trusted on that connection.
    answer = read(f"HTTP/1.1 {status} X\r\nContent-Length: 10\r\n\r\n".encode(), cuts=cuts)
    assert (answer.status, answer.body, answer.reusable) == (status, b"", False)


@pytest.mark.parametrize(
    ("raw", "reusable"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nextra", False),  # out of step
        (b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n", True),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", False),
        # A whole second answer in the same bytes: the first is read, the second never.
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" * 2, False),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\nextra", False),
        # llhttp takes RTSP/ and ICE/ for HTTP/: HTTP's framing, and never reused as 1.0.
        (b"RTSP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", False),
    ],
)
def test_when_the_connection_may_be_reused(raw: bytes, reusable: bool) -> None:
    assert read(raw).reusable is reusable


@pytest.mark.parametrize("cuts", ["whole", "bytes"])
def test_repeated_fields_are_joined_and_names_lower_cased(cuts: str) -> None:
    raw = b"HTTP/1.1 200 OK\r\nX-A: 1\r\nx-a: 2\r\nContent-Length:0\r\n\r\n"
    assert read(raw, cuts=cuts).headers["x-a"] == "1, 2"


# Refused by llhttp itself (its reason is in the error), however the bytes are cut.
@pytest.mark.parametrize("cuts", ["whole", "bytes"])
@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"HTTP/2 200 OK\r\n\r\n", "Expected dot"),
        (b"ICY 200 OK\r\n\r\n", "Expected HTTP/"),
        (b"HTTP/1.2 200 OK\r\n\r\n", "Invalid HTTP version"),
        (b"HTTP/1.1 2x0 OK\r\n\r\n", "Invalid status code"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "Invalid response status"),
        (b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", "Missing expected CR"),
        (b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\n\r\n", "Unexpected whitespace"),
        (b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\tfolded\r\n\r\n", "Unexpected whitespace"),
        (b"HTTP/1.1 200 OK\r\nBad Name: 1\r\n\r\n", "Invalid header token"),
        (b"HTTP/1.1 200 OK\r\nX-A : 1\r\n\r\n", "Invalid header token"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "Invalid header token"),
        (b"HTTP/1.1 200 OK\r\nX-A: \x01\r\n\r\n", "Invalid header value char"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx", "Duplicate"),
        # Stricter than the hand-written reader was: equal values are refused too.
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", "Duplicate"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Invalid character in Content"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1_0\r\n\r\n", "Invalid character in Content"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", "Invalid character in Content"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n", "overflow"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"f" * 17, "overflow"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\nx\r\n", "Missing expected CR"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY", "after chunk data"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nBad Trailer: 1\r\n\r\n",
            "Invalid header token",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            "Content-Length can't be present with Transfer-Encoding",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "Transfer-Encoding can't be present with Content-Length",
        ),
    ],
)
def test_what_llhttp_refuses_is_refused(raw: bytes, reason: str, cuts: str) -> None:
    with pytest.raises(AnswerError, match=f"^malformed answer: .*{reason}"):
        read(raw, cuts=cuts)


# Read by llhttp, refused by the reader: what the relay cannot use safely.
@pytest.mark.parametrize("cuts", ["whole", "bytes"])
@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"HTTP/0.9 200 OK\r\nContent-Length: 0\r\n\r\n", "not an HTTP/1.x answer"),
        (b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", "not an HTTP/1.x answer"),
        (b"HTTP/1.1 099 Odd\r\n\r\n", "invalid status code"),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "switched protocols"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "transfer coding"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", "transfer coding"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n", "transfer coding"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "transfer coding",
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 0\r\n\r\n", "coding"),
        (b"HTTP/1.1 204 OK\r\nContent-Encoding: br\r\n\r\n", "content coding"),
    ],
)
def test_what_cannot_be_read_safely_is_refused(raw: bytes, reason: str, cuts: str) -> None:
    with pytest.raises(AnswerError, match=reason):
        read(raw, cuts=cuts)


@pytest.mark.parametrize("cuts", ["whole", "bytes"])
@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1025\r\n\r\n",  # refused before any body
        # llhttp does not tell a chunk's size: refused at the first byte over the bound.
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n"
        + b"x" * 1024
        + b"\r\n1\r\nx",
        b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 1025,
    ],
)
def test_a_body_over_the_bound_is_refused_before_it_is_kept(raw: bytes, cuts: str) -> None:
    with pytest.raises(AnswerTooLarge, match="larger than 1024 bytes"):
        read(raw, cuts=cuts, end=True)


def _feed_all(reader: AnswerReader, pieces: list[bytes]) -> None:
    for piece in pieces:
        assert reader.feed(piece) is None


def test_chunk_framing_counts_against_the_bound() -> None:
    """200 bytes of data in 1-byte chunks: with a 64-byte head bound, the 1,200 bytes of the
    answer's body and framing are more than the 1,024 + 64 the reader takes."""
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1\r\nx\r\n" * 200
    reader = AnswerReader(MAX_BODY, max_head=64)
    pieces = [raw[n : n + 7] for n in range(0, len(raw), 7)]
    with pytest.raises(AnswerTooLarge, match="framing included"):
        _feed_all(reader, pieces)
    # The same answer within the bounds is read.
    assert read(raw + b"0\r\n\r\n").body == b"x" * 200


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
        # one field larger than the bound, the whole head in one piece
        b"HTTP/1.1 200 OK\r\nX-Pad: " + b"p" * MAX_HEAD_BYTES + b"\r\nContent-Length: 0\r\n\r\n",
        # many interim answers: their heads count too
        (b"HTTP/1.1 103 Early\r\nLink: " + b"l" * 1000 + b"\r\n\r\n") * 64,
        b"HTTP/1.1 200 " + b"r" * MAX_HEAD_BYTES + b"\r\nContent-Length: 0\r\n\r\n",
    ],
)
def test_a_head_over_the_bound_in_one_piece_is_refused(raw: bytes) -> None:
    with pytest.raises(AnswerError, match="head is larger"):
        AnswerReader(MAX_BODY).feed(raw)


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
