"""The error journal (DESIGN.md): every failure event is recorded under a fingerprint, repeats
count up, and when a later rollout of the same toolbox passes, its open entries are marked
resolved with what changed in the spec. Fed by the event journal."""

from __future__ import annotations

import json
from typing import Any, Protocol

from dtma.domain.errors_journal import FAILURE_KINDS, classify, fingerprint
from dtma.domain.records import EventRecord, RevisionRecord
from dtma.observability.metrics import observe_error

MAX_ENTRIES = 1000
PASS_KINDS = frozenset({"rollout_passed", "rollback_passed", "recovery_kept_new_revision"})


class ErrorStore(Protocol):
    async def record_error(
        self,
        fp: str,
        *,
        category: str,
        kind: str,
        reason: str,
        toolbox: str | None,
        server: str | None,
        revision: int | None,
        sample: str,
        hint: str,
        keep: int,
    ) -> None: ...
    async def resolve_errors(self, toolbox: str, describe: Any) -> int: ...
    async def revisions(self, toolbox_id: str) -> list[RevisionRecord]: ...


class ErrorJournal:
    def __init__(self, store: ErrorStore, keep: int = MAX_ENTRIES) -> None:
        self._store = store
        self._keep = keep

    async def observe(self, event: EventRecord) -> None:
        """Called for every event after it is stored (messages are already redacted)."""
        if event.kind in FAILURE_KINDS:
            found = classify(event.kind, event.reason, event.message)
            observe_error(found.category)
            await self._store.record_error(
                fingerprint(event.kind, event.reason, event.toolbox, event.server, event.message),
                category=found.category,
                kind=event.kind,
                reason=event.reason,
                toolbox=event.toolbox,
                server=event.server,
                revision=event.revision,
                sample=event.message[:500],
                hint=found.hint,
                keep=self._keep,
            )
        elif event.kind in PASS_KINDS and event.toolbox and event.revision is not None:
            specs = {
                r.number: json.loads(r.spec) for r in await self._store.revisions(event.toolbox)
            }
            passed = specs.get(event.revision, {})

            def describe(failed_revision: int | None) -> str:
                before = specs.get(failed_revision or -1)
                if before is None or failed_revision == event.revision:
                    return f"revision {event.revision} passed"
                changed = spec_changes(before, passed)
                return (
                    f"revision {event.revision} passed; changed since revision "
                    f"{failed_revision}: {', '.join(changed[:10]) or 'nothing'}"
                )

            await self._store.resolve_errors(event.toolbox, describe)


def spec_changes(before: Any, after: Any, path: str = "") -> list[str]:
    """Field paths whose values differ (servers matched by name). Pure."""
    if isinstance(before, dict) and isinstance(after, dict):
        out: list[str] = []
        for key in sorted(set(before) | set(after)):
            out += spec_changes(before.get(key), after.get(key), f"{path}.{key}" if path else key)
        return out
    if (
        isinstance(before, list)
        and isinstance(after, list)
        and all(isinstance(x, dict) and "name" in x for x in before + after)
    ):
        b = {x["name"]: x for x in before}
        a = {x["name"]: x for x in after}
        out = []
        for name in sorted(set(b) | set(a)):
            out += spec_changes(b.get(name), a.get(name), f"{path}[{name}]")
        return out
    return [] if before == after else [path or "."]
