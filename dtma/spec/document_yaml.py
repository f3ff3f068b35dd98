"""The YAML half of `document.load_document`: no aliases, no timestamps, within limits.

Its own module so that PyYAML loads with the first YAML body, not with the agent
(`document.py` imports this inside `load_document`, which the engine runs in a worker thread).
Pure and synchronous.
"""

from __future__ import annotations

from typing import Any

import yaml

from dtma.errors import SpecInvalid
from dtma.spec.document import DocumentLimits, invalid_body

_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"

_CLoader: Any = getattr(yaml, "CSafeLoader", None)


def _without_timestamps(resolvers: dict[Any, Any]) -> dict[Any, Any]:
    """Implicit resolvers minus timestamps: "2024-01-01" stays a string (env values, and
    "2001-13-45" would otherwise raise ValueError deep inside the constructor)."""
    return {
        first: [(tag, rx) for tag, rx in entries if tag != _TIMESTAMP_TAG]
        for first, entries in resolvers.items()
    }


class _PySpecLoader(yaml.SafeLoader):
    """Pure-Python fallback where PyYAML was built without libyaml."""

    yaml_implicit_resolvers = _without_timestamps(yaml.SafeLoader.yaml_implicit_resolvers)


_SpecLoader: Any = _PySpecLoader
if _CLoader is not None:
    _SpecLoader = type(
        "_CSpecLoader",
        (_CLoader,),
        {"yaml_implicit_resolvers": _without_timestamps(_CLoader.yaml_implicit_resolvers)},
    )


def load_yaml(text: str, limits: DocumentLimits) -> Any:
    """Parse YAML text; raises SpecInvalid (loc ["body"]) for anything a body can get wrong."""
    try:
        _scan_events(text, limits)
        return yaml.load(text, Loader=_SpecLoader)  # noqa: S506 - a SafeLoader without timestamps
    except SpecInvalid:
        raise
    except yaml.YAMLError as exc:
        raise invalid_body("body is not valid YAML", str(exc)) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # Constructors raise these for values such as a 5000-digit integer or an explicit
        # !!timestamp that is no date; the message names the value, never a secret (specs hold
        # no secret values, only Vault references).
        raise invalid_body("body is not valid YAML", str(exc)[:200] or type(exc).__name__) from None


def _scan_events(text: str, limits: DocumentLimits) -> None:
    """Reject aliases (billion laughs), excess depth and node count before anything is built."""
    depth = nodes = 0
    for event in yaml.parse(text, Loader=_SpecLoader):
        if isinstance(event, yaml.AliasEvent):
            raise invalid_body("body is not valid YAML", "YAML aliases are not allowed in a spec")
        if isinstance(event, yaml.NodeEvent):
            nodes += 1
            if nodes > limits.max_nodes:
                raise invalid_body("body is too large", f"more than {limits.max_nodes} values")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > limits.max_depth:
                raise invalid_body(
                    "body is nested too deeply", f"more than {limits.max_depth} levels"
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
