"""Turn a request body (JSON or YAML text) into plain data, within limits, or raise SpecInvalid.

Pure and synchronous; CPU-bound on big bodies, so the engine runs it in a worker thread. Every
failure a hostile body can provoke (bad UTF-8, deep nesting, aliases, huge integers, impossible
dates, too many nodes) is a SpecInvalid with loc ["body"], never another exception. YAML is
read by `document_yaml.py`, imported by the first YAML body (in that worker thread), so an agent
that has been sent none never loads PyYAML (docs/benchmarks.md, "Idle agent").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from dtma.errors import SpecInvalid


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
        raise invalid_body("body is not UTF-8", str(exc)) from None
    if text.lstrip().startswith(("{", "[")):
        return load_json(text, limits)
    from dtma.spec.document_yaml import load_yaml

    return load_yaml(text, limits)


def load_json(body: bytes | str, limits: DocumentLimits = DEFAULT_LIMITS) -> Any:
    """JSON only, within the same limits (small request bodies such as POST /rollback's)."""
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        raise invalid_body("body is not valid JSON", "nested too deeply") from None
    except ValueError as exc:  # bad JSON or UTF-8, integers past the digit limit
        raise invalid_body("body is not valid JSON", str(exc)[:200]) from None
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
            raise invalid_body("body is too large", f"more than {limits.max_nodes} values")
        if depth > limits.max_depth:
            raise invalid_body("body is nested too deeply", f"more than {limits.max_depth} levels")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def invalid_body(message: str, reason: str) -> SpecInvalid:
    return SpecInvalid(message, [{"loc": ["body"], "msg": reason}])
