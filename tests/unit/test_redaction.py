"""The redaction processor masks every known secret value, in any field, exceptions included."""

from __future__ import annotations

import io
import json

import structlog

from dtma.observability.redaction import MASK, Redactor


def test_values_are_masked_everywhere() -> None:
    r = Redactor()
    r.add("hunter2-long")
    r.add("abc")  # too short to mask safely: ignored
    event = {
        "event": "x hunter2-long y",
        "nested": {"list": ["hunter2-long"]},
        "n": 3,
        "note": "abc stays",
    }
    out = r.processor(None, "info", dict(event))
    assert out["event"] == f"x {MASK} y"
    assert out["nested"] == {"list": [MASK]}
    assert out["n"] == 3
    assert out["note"] == "abc stays"


def test_the_longest_value_wins_when_values_overlap() -> None:
    r = Redactor()
    r.add("secret")
    r.add("secret-and-more")
    assert r.redact("a secret-and-more b secret") == f"a {MASK} b {MASK}"


def test_the_processor_masks_rendered_log_lines_and_tracebacks() -> None:
    r = Redactor()
    r.add("s3cr3t-value")
    buf = io.StringIO()
    logger = structlog.wrap_logger(
        structlog.WriteLogger(buf),
        processors=[
            structlog.processors.format_exc_info,
            r.processor,
            structlog.processors.JSONRenderer(),
        ],
    )
    try:
        raise ValueError("bad token s3cr3t-value")
    except ValueError:
        logger.error("failed", detail="got s3cr3t-value", exc_info=True)
    line = json.loads(buf.getvalue())
    assert "s3cr3t-value" not in buf.getvalue()
    assert line["detail"] == f"got {MASK}"
    assert MASK in line["exception"]


def test_a_multi_line_value_is_masked_line_by_line() -> None:
    r = Redactor()
    pem = (
        "-----BEGIN KEY-----\nMIIBOgIBAAJBAKj34GkxFhD9\n0Ju0bM2Xl3QkQ7kM5o4tB2w\n"
        "-----END KEY-----\n"
    )
    r.add(pem)
    joined = " | ".join(line for line in pem.splitlines())
    out = r.redact(f"last output: {joined}")
    for line in pem.splitlines():
        assert line not in out
    assert r.redact(pem) == MASK


def test_excerpt_redacts_before_it_cuts() -> None:
    r = Redactor()
    value = "ZZZZ-secret-value-1234"
    r.add(value)
    text = "x" * 10 + value + "y" * 10
    # Cut in the middle of the value: what is left must not carry any of it.
    assert value[:8] not in r.excerpt(text, 18)
    assert r.excerpt(text, 18) == "x" * 10 + MASK + "y" * 5
    assert value[-8:] not in r.excerpt(text, 16, tail=True)
