"""The `dtma` command line: `dtma serve` runs the agent; the other commands talk to one.

Exit codes: 0 ok; 1 an operation failed or was rolled back; 2 usage, configuration or validation
error; 3 agent unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from dtma import __version__
from dtma.cli_client import add_client_commands, run_client_command
from dtma.cli_fleet import add_fleet_commands, run_fleet_command
from dtma.config import load_settings
from dtma.errors import ConfigError
from dtma.lazy_import import without_charset_detection
from dtma.observability.logging import configure_logging

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dtma", description=__doc__)
    parser.add_argument("--version", action="version", version=f"dtma {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the agent (settings from DTMA_* variables)")
    serve.add_argument("--config", type=Path, help="YAML/JSON file with the same keys as the env")
    add_client_commands(sub)
    add_fleet_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args.config)
    if args.command == "fleet":  # many agents: tokens come from the fleet file
        return run_fleet_command(args)
    return run_client_command(args)


def _serve(config: Path | None) -> int:
    without_charset_detection()  # before anything imports requests (docker-py)
    try:
        settings = load_settings(config_file=config)
        configure_logging(settings.resolved_log_format, settings.log_level)
        asyncio.run(_serve_async(settings))
    except ConfigError as exc:
        print(f"dtma: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        pass
    return EXIT_OK


async def _serve_async(settings: object) -> None:
    from dtma.bootstrap import serve
    from dtma.config import Settings

    assert isinstance(settings, Settings)
    await serve(settings)


if __name__ == "__main__":
    sys.exit(main())
