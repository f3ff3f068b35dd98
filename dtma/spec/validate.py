"""Parse and validate a toolbox spec: JSON or YAML in, ToolboxSpec out, or SpecInvalid with the
problems as {loc, msg} (at most MAX_PROBLEMS of them). Pure and CPU-bound: the engine calls it in
a worker thread. The agent's policy is passed in.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from typing import Any

from pydantic import ValidationError

from dtma.errors import SpecInvalid
from dtma.spec.document import DEFAULT_LIMITS, DocumentLimits, load_document
from dtma.spec.models import ToolboxSpec, is_dns_label
from dtma.spec.policy import SpecPolicy, policy_problems

__all__ = ["MAX_PROBLEMS", "SpecPolicy", "parse_spec", "validate_toolbox_id"]

MAX_PROBLEMS = 100


def validate_toolbox_id(toolbox_id: str) -> None:
    if not is_dns_label(toolbox_id):
        raise SpecInvalid(
            "invalid toolbox id",
            [
                {
                    "loc": ["path", "id"],
                    "msg": "must be a DNS label: lowercase letters, digits and "
                    "'-', at most 63 characters",
                }
            ],
        )


def parse_spec(
    body: bytes | str, policy: SpecPolicy, limits: DocumentLimits = DEFAULT_LIMITS
) -> ToolboxSpec:
    """Parse JSON or YAML and validate. Raises SpecInvalid listing the problems found."""
    raw = load_document(body, limits)
    if not isinstance(raw, dict):
        raise SpecInvalid("invalid spec", [{"loc": [], "msg": "the spec must be a mapping"}])
    try:
        spec = ToolboxSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecInvalid("invalid spec", _capped(_detail(e) for e in exc.errors())) from None
    problems = _capped(iter([*_group_problems(spec), *policy_problems(spec, policy)]))
    if problems:
        raise SpecInvalid("invalid spec", problems)
    return spec


def _capped(problems: Iterator[dict[str, Any]]) -> list[dict[str, Any]]:
    """At most MAX_PROBLEMS entries, and a last one saying how many more were cut."""
    shown = list(islice(problems, MAX_PROBLEMS))
    more = sum(1 for _ in problems)
    if more:
        shown.append({"loc": [], "msg": f"{more} more problems not shown"})
    return shown


def _detail(err: Any) -> dict[str, Any]:
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    return {"loc": [p for p in err["loc"] if p != "function-after"], "msg": msg[:500]}


def _group_problems(spec: ToolboxSpec) -> Iterator[dict[str, Any]]:
    seen: set[str] = set()
    for i, server in enumerate(spec.servers):
        if server.name in seen:
            yield {"loc": ["servers", i, "name"], "msg": f"duplicate server name {server.name!r}"}
        seen.add(server.name)
    fixed = [s.name for s in spec.servers if s.fixed_host_port]
    if fixed and spec.rollout.order == "start_first":
        yield {
            "loc": ["rollout", "order"],
            "msg": f"must be stop_first when a fixed host port is published ({', '.join(fixed)}):"
            " the old and new containers cannot both bind it",
        }
    if not spec.network.egress:
        # Docker maps no port from an --internal network and says nothing: the port would
        # silently not be there.
        for i, server in enumerate(spec.servers):
            if server.publish is not None:
                yield {
                    "loc": ["servers", i, "publish"],
                    "msg": "needs network.egress: true: Docker publishes no port from the"
                    " internal network a toolbox without egress runs on",
                }
