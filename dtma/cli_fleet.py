"""`dtma fleet status|apply|rm`: the fleet client's commands, over fleet.yaml (dtma.fleet).

Exit codes: 0 ok; 1 a rollout halted (a gate failed, an agent errored) or a removal failed;
2 usage: a bad fleet file, selector or spec file, or no agent selected; 3 an agent was
unreachable (status: any agent without a status answer; rm: an agent unreachable).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def _non_negative(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return n


def _seconds(value: str) -> float:
    n = float(value)
    if not 0 < n <= 3600:
        raise argparse.ArgumentTypeError("must be between 0 and 3600 seconds")
    return n


def add_fleet_commands(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-F",
        "--fleet",
        type=Path,
        default=Path(os.environ.get("DTMA_FLEET", "fleet.yaml")),
        help="the fleet file (DTMA_FLEET; default ./fleet.yaml)",
    )
    common.add_argument(
        "--selector",
        action="append",
        metavar="KEY=VALUE",
        help="only agents with this label (repeat: all must match)",
    )
    common.add_argument("--parallel", type=_positive, default=16, help="agents called at once (16)")
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    fleet = sub.add_parser("fleet", help="many agents at once, over fleet.yaml")
    actions = fleet.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = actions.add_parser(
        "status", parents=[common], help="one row per agent; exit 3 if any did not answer"
    )
    p.add_argument("--toolbox", help="also show this toolbox's revision and phase")
    p.add_argument("--timeout", type=_seconds, default=10.0, help="per agent, seconds (10)")
    p = actions.add_parser(
        "apply", parents=[common], help="gated rollout: canaries one by one, then batches"
    )
    p.add_argument("-f", "--file", required=True, type=Path, help="the toolbox spec")
    p.add_argument("--id", dest="toolbox", help="toolbox id (default: the spec file's name)")
    p.add_argument("--canary", type=_non_negative, default=1, help="agents first, one by one (1)")
    p.add_argument("--batch", type=_positive, default=10, help="agents per batch after (10)")
    p.add_argument(
        "--rollback-on-failure",
        action="store_true",
        help="on a halt, roll the agents this run updated back to their previous revision",
    )
    p.add_argument(
        "--timeout", type=_seconds, default=600.0, help="per agent rollout, seconds (600)"
    )
    p = actions.add_parser("rm", parents=[common], help="delete a toolbox on every agent")
    p.add_argument("--id", dest="toolbox", required=True)
    p.add_argument("--timeout", type=_seconds, default=120.0, help="per agent, seconds (120)")


def run_fleet_command(args: argparse.Namespace) -> int:
    # The fleet client (dtma.fleet, its models and fan-out) loads only for `dtma fleet`, so that
    # `dtma serve` does not hold it (docs/benchmarks.md, "Idle agent").
    from dtma.cli_fleet_run import run_fleet

    return run_fleet(args)
