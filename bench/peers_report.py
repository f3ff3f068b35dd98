"""Pure helpers of bench/gateway_peers.py: the figures of one target in one era, the
side-by-side table, and the goal check of issue 20 (in each era dtma's median <= the best
peer's, and dtma's calls/s >= 1.25x the best peer's). No I/O."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

FLOOR = "floor (stdio, no bridge)"
DTMA = "dtma"
THROUGHPUT_FACTOR = 1.25


@dataclass
class Figures:
    """One target in one era. `note` says why a figure is missing (the era is not supported,
    the bridge is unusable, a call failed); a target is never dropped from the table."""

    era: str
    target: str
    protocol: str = "-"
    p50: float | None = None
    p99: float | None = None
    calls_per_s: float | None = None
    cpu_ms: float | None = None  # the bridge process's CPU per call, throughput phase
    starts: int | None = None  # server containers the bridge started while being measured
    note: str = ""


def p50_p99(samples: list[float]) -> tuple[float, float]:
    """Median and 99th percentile (the 'exclusive' method of `statistics.quantiles`); needs at
    least two samples."""
    return statistics.median(samples), statistics.quantiles(samples, n=100)[98]


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def table(rows: list[Figures]) -> str:
    """A Markdown table, one row per target and era, in the order given."""
    lines = [
        "| era | target | protocol | p50 ms | p99 ms | calls/s | bridge CPU ms/call "
        "| servers started | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.era} | {r.target} | {r.protocol} | {_num(r.p50, '.2f')} | "
            f"{_num(r.p99, '.2f')} | {_num(r.calls_per_s, '.0f')} | {_num(r.cpu_ms, '.2f')} | "
            f"{'-' if r.starts is None else r.starts} | {r.note} |"
        )
    return "\n".join(lines)


def goal_check(
    rows: list[Figures], era: str, peers: tuple[str, ...], fallback: str | None = None
) -> list[str]:
    """The goal's two lines for `era`, each ending in pass or fail (or n/a when there is no
    figure to compare against). A peer without a figure (unsupported, unusable) does not count
    as the best peer; that is said in the table's note, not hidden. When no peer has a figure
    in `era` and `fallback` is given, the peers' figures in `fallback` stand in, and the lines
    say so: a client of `era` that falls back gets what the peer gives in `fallback`."""
    here = [r for r in rows if r.era == era]
    dtma = next((r for r in here if r.target == DTMA), None)
    mine = [r for r in here if r.target in peers]
    if (
        fallback
        and fallback != era
        and not any(r.p50 is not None or r.calls_per_s is not None for r in mine)
    ):
        mine = [r for r in rows if r.era == fallback and r.target in peers]
        era = f"{era} (peers' figures: their {fallback} era, as a client falling back gets)"
    return [
        _verdict(era, "median", dtma, mine, lambda r: r.p50, lowest=True),
        _verdict(era, "calls/s", dtma, mine, lambda r: r.calls_per_s, lowest=False),
    ]


def _verdict(
    era: str,
    what: str,
    dtma: Figures | None,
    peers: list[Figures],
    value: Callable[[Figures], float | None],
    lowest: bool,
) -> str:
    """One goal line: dtma's `value` against the best peer's (the lowest median: dtma <= it;
    the highest calls/s: dtma >= THROUGHPUT_FACTOR times it)."""
    have = [(v, f"{r.target} ({r.protocol})") for r in peers if (v := value(r)) is not None]
    if not have:
        return f"{era}: {what}: n/a (no peer has a figure)"
    mine = value(dtma) if dtma is not None else None
    if mine is None:
        return f"{era}: {what}: fail (dtma has no figure: {dtma.note if dtma else 'absent'})"
    if lowest:
        best, peer = min(have)
        ok, goal = mine <= best, "goal <="
        return (
            f"{era}: {what}: dtma {mine:.2f} ms vs best peer {peer} {best:.2f} ms "
            f"({goal}): {'pass' if ok else 'fail'}"
        )
    best, peer = max(have)
    want = best * THROUGHPUT_FACTOR
    return (
        f"{era}: {what}: dtma {mine:.0f} vs best peer {peer} {best:.0f} "
        f"(goal >= {THROUGHPUT_FACTOR}x = {want:.0f}): {'pass' if mine >= want else 'fail'}"
    )
