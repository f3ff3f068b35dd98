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


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_set_is_bounded_to_values_that_live_containers_hold() -> None:
    clock = _Clock()
    r = Redactor(clock=clock, grace=60)
    for i in range(1000):  # 1000 rotations of one server's token
        r.add(f"token-{i:04d}-value", fingerprint=f"fp{i}")
    r.add("shared-value", fingerprint="fp-dead")
    r.add("shared-value", fingerprint="fp999")
    assert len(r) == 1001
    assert r.retain({"fp999"}) == 0  # within the grace period nothing is forgotten
    clock.now += 61
    assert r.retain({"fp999"}) == 999
    assert len(r) == 2
    assert r.redact("token-0999-value shared-value") == f"{MASK} {MASK}"
    assert r.redact("token-0000-value") == "token-0000-value"  # no container holds it any more


def test_a_live_value_is_never_forgotten_and_a_fresh_read_has_a_grace_period() -> None:
    clock = _Clock()
    r = Redactor(clock=clock, grace=60)
    r.add("held-by-a-container", fingerprint="fp-live")
    r.add("read-but-no-container-yet", fingerprint="fp-new")
    r.add("added-without-owner")
    clock.now += 3600
    r.add("read-but-no-container-yet", fingerprint="fp-new")  # read again just now
    for _ in range(3):
        r.retain({"fp-live"})
    text = "held-by-a-container read-but-no-container-yet added-without-owner"
    assert r.redact(text) == f"{MASK} {MASK} added-without-owner"
    clock.now += 61
    r.retain({"fp-live"})
    assert r.redact(text) == f"{MASK} read-but-no-container-yet added-without-owner"
    r.retain(set())
    assert len(r) == 0


def test_a_listing_taken_before_the_container_existed_does_not_forget_its_value() -> None:
    """Read from Vault, a re-list runs before the container is created (an image pull), then
    the container lives on: its value must stay masked past the grace period."""
    clock = _Clock()
    r = Redactor(clock=clock, grace=60)
    r.add("live-secret-value", fingerprint="F")
    assert r.retain(set()) == 0  # the container does not exist yet
    clock.now += 700
    assert r.retain({"F"}) == 0
    assert r.redact("live-secret-value") == MASK
    assert r.retain(set()) == 1  # now it is gone for good
