"""bench/peers_report.py: the percentiles, the side-by-side table and the goal check of
bench/gateway_peers.py (issue 20, item 2)."""

from __future__ import annotations

import pytest

from bench.peers_report import DTMA, Figures, goal_check, p50_p99, table

PEERS = ("mcp-proxy", "fastmcp", "supergateway")


def rows(
    era: str, dtma: tuple[float, float], **peers: tuple[float | None, float | None]
) -> list[Figures]:
    out = [Figures(era, DTMA, p50=dtma[0], calls_per_s=dtma[1])]
    out += [
        Figures(era, name.replace("_", "-"), p50=p, calls_per_s=c) for name, (p, c) in peers.items()
    ]
    return out


def test_p50_and_p99_of_a_known_sample() -> None:
    p50, p99 = p50_p99([float(x) for x in range(1, 101)])
    assert p50 == 50.5
    assert p99 == pytest.approx(99.99)


def test_the_goal_passes_against_the_best_peer_of_each_figure() -> None:
    # best median: fastmcp 5.0; best calls/s: mcp-proxy 300, so dtma needs >= 375
    got = goal_check(
        rows("e", (4.9, 376.0), mcp_proxy=(6.0, 300.0), fastmcp=(5.0, 200.0)), "e", PEERS
    )
    assert got[0].endswith("pass")
    assert "best peer fastmcp (-) 5.00 ms" in got[0]
    assert got[1].endswith("pass")
    assert "best peer mcp-proxy (-) 300" in got[1]
    assert "= 375" in got[1]


def test_the_goal_fails_when_dtma_is_slower_or_short_of_the_factor() -> None:
    got = goal_check(
        rows("e", (5.1, 374.0), mcp_proxy=(6.0, 300.0), fastmcp=(5.0, 200.0)), "e", PEERS
    )
    assert got[0].endswith("fail")
    assert got[1].endswith("fail")


def test_a_peer_without_figures_does_not_count_and_dtma_without_figures_fails() -> None:
    data = rows("e", (9.0, 10.0), mcp_proxy=(None, None), fastmcp=(10.0, 8.0))
    got = goal_check(data, "e", PEERS)
    assert "fastmcp" in got[0]
    assert got[0].endswith("pass")
    data[0].p50 = data[0].calls_per_s = None
    data[0].note = "failed: boom"
    got = goal_check(data, "e", PEERS)
    assert got[0].startswith("e: median: fail")
    assert "boom" in got[0]
    assert got[1].startswith("e: calls/s: fail")


def test_with_no_peer_in_an_era_the_fallback_era_stands_in_and_says_so() -> None:
    data = rows("new", (4.0, 400.0), mcp_proxy=(None, None))
    data += rows("old", (4.5, 300.0), mcp_proxy=(5.0, 330.0))
    assert goal_check(data, "new", PEERS)[0] == "new: median: n/a (no peer has a figure)"
    got = goal_check(data, "new", PEERS, fallback="old")
    assert "their old era" in got[0]
    assert got[0].endswith("pass")
    assert "mcp-proxy (-) 330" in got[1]
    assert got[1].endswith("fail")  # 400 < 1.25 x 330


def test_the_table_shows_every_row_with_dashes_for_missing_figures() -> None:
    data = [
        Figures("e", DTMA, "2026-07-28", 4.25, 9.5, 447.4, 1.234, 0),
        Figures("e", "supergateway", note="unusable: 3 new server container(s)"),
    ]
    lines = table(data).splitlines()
    assert len(lines) == 4
    assert lines[2] == "| e | dtma | 2026-07-28 | 4.25 | 9.50 | 447 | 1.23 | 0 |  |"
    assert (
        lines[3]
        == "| e | supergateway | - | - | - | - | - | - | unusable: 3 new server container(s) |"
    )


def test_the_best_peer_is_named_with_the_protocol_its_figures_were_measured_in() -> None:
    data = rows("e", (4.0, 400.0), mcp_proxy=(5.0, 330.0))
    data[1].protocol = "2025-11-25"
    got = goal_check(data, "e", PEERS, fallback="other")
    assert "best peer mcp-proxy (2025-11-25) 5.00 ms" in got[0]
    assert "their other era" not in got[0]  # the era has a peer figure: no fallback
