"""Turn a request body (JSON or YAML text) into plain data, within limits, or raise SpecInvalid.

Pure and synchronous; CPU-bound on big bodies, so the engine runs it in a worker thread. Every
failure a hostile body can provoke (bad UTF-8, deep nesting, aliases, huge integers, impossible
dates, too many nodes) is a SpecInvalid with loc ["body"], never another exception.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml

from dtma.errors import SpecInvalid

_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


@dataclass(frozen=True)
class DocumentLimits:
    """Bounds on a document's shape. A real spec is a few levels deep and a few hundred nodes."""

    max_depth: int = 32
    max_nodes: int = 200_000


DEFAULT_LIMITS = DocumentLimits()


def load_document(body: bytes | str, limits: DocumentLimits = DEFAULT_LIMITS) -> Any:
    """JSON when the text starts with '{' or '[', YAML otherwise; no aliases, no timestamps."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError as exc:
        raise _invalid("body is not UTF-8", str(exc)) from None
    if text.lstrip().startswith(("{", "[")):
        return load_json(text, limits)
    return _load_yaml(text, limits)


def load_json(body: bytes | str, limits: DocumentLimits = DEFAULT_LIMITS) -> Any:
    """JSON only, within the same limits (small request bodies such as POST /rollback's)."""
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        raise _invalid("body is not valid JSON", "nested too deeply") from None
    except ValueError as exc:  # bad JSON or UTF-8, integers past the digit limit
        raise _invalid("body is not valid JSON", str(exc)[:200]) from None
    _check_shape(data, limits)
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _check_shape(data: Any, limits: DocumentLimits) -> None:
    """Iterative walk (no recursion) that bounds depth and node count."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    nodes = 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > limits.max_nodes:
            raise _invalid("body is too large", f"more than {limits.max_nodes} values")
        if depth > limits.max_depth:
            raise _invalid("body is nested too deeply", f"more than {limits.max_depth} levels")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


# -- YAML ----------------------------------------------------------------------------------------

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


def _load_yaml(text: str, limits: DocumentLimits) -> Any:
    try:
        _scan_events(text, limits)
        return yaml.load(text, Loader=_SpecLoader)  # noqa: S506 - a SafeLoader without timestamps
    except SpecInvalid:
        raise
    except yaml.YAMLError as exc:
        raise _invalid("body is not valid YAML", str(exc)) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # Constructors raise these for values such as a 5000-digit integer or an explicit
        # !!timestamp that is no date; the message names the value, never a secret (specs hold
        # no secret values, only Vault references).
        raise _invalid("body is not valid YAML", str(exc)[:200] or type(exc).__name__) from None


def _scan_events(text: str, limits: DocumentLimits) -> None:
    """Reject aliases (billion laughs), excess depth and node count before anything is built."""
    depth = nodes = 0
    for event in yaml.parse(text, Loader=_SpecLoader):
        if isinstance(event, yaml.AliasEvent):
            raise _invalid("body is not valid YAML", "YAML aliases are not allowed in a spec")
        if isinstance(event, yaml.NodeEvent):
            nodes += 1
            if nodes > limits.max_nodes:
                raise _invalid("body is too large", f"more than {limits.max_nodes} values")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > limits.max_depth:
                raise _invalid("body is nested too deeply", f"more than {limits.max_depth} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _invalid(message: str, reason: str) -> SpecInvalid:
    return SpecInvalid(message, [{"loc": ["body"], "msg": reason}])
