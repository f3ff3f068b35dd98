"""DeleteGuard: the toolboxes with a delete queued or running, so that an apply racing a delete
is refused (409, "apply it again once the delete has finished"), never lost, and a second delete
of the same toolbox answers with the operation already queued.

In memory, event loop only: `submit` marks the toolbox before its first await, so an apply
that checks afterwards (or compares `submitted` across its own awaits) sees the delete.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from dtma.errors import Conflict, OperationQueued

Work = Callable[[str], Awaitable[tuple[str, str | None]]]

PENDING = "pending"  # a delete being submitted, its operation id not known yet


class DeleteGuard:
    def __init__(self) -> None:
        # toolbox -> the delete's operation id (or PENDING while it is submitted)
        self._deleting: dict[str, str] = {}
        # toolbox -> deletes submitted so far: an apply compares it before and after its awaits
        self._submitted: dict[str, int] = {}

    def submitted(self, toolbox_id: str) -> int:
        return self._submitted.get(toolbox_id, 0)

    def refuse(self, toolbox_id: str, raced: bool = False) -> None:
        """Raise Conflict if `toolbox_id` is being deleted (or `raced`: a delete came in while
        the caller was awaiting)."""
        op = self._deleting.get(toolbox_id)
        if op is not None or raced:
            raise Conflict(
                f"toolbox {toolbox_id} is being deleted"
                + (f" (operation {op})" if op and op != PENDING else "")
                + "; apply it again once the delete has finished"
            )

    async def submit(
        self, toolbox_id: str, work: Work, submit: Callable[[Work], Awaitable[str]]
    ) -> str:
        """Submit the delete `work` through `submit` (the operation queue) unless one is queued
        already, whose id is returned instead. The toolbox counts as being deleted from now
        until `work` ends; a submit that fails releases it, one that queues keeps it."""
        pending = self._deleting.get(toolbox_id)
        if pending is not None and pending != PENDING:
            return pending  # already queued: the same operation

        async def tracked(op_id: str) -> tuple[str, str | None]:
            try:
                return await work(op_id)
            finally:
                if self._deleting.get(toolbox_id) == op_id:
                    del self._deleting[toolbox_id]

        self._submitted[toolbox_id] = self.submitted(toolbox_id) + 1
        self._deleting[toolbox_id] = PENDING
        try:
            op = await submit(tracked)
        except OperationQueued as queued:  # queued all the same: a PUT meanwhile is refused
            self._deleting[toolbox_id] = queued.operation
            raise
        except BaseException:
            self._deleting.pop(toolbox_id, None)
            raise
        self._deleting[toolbox_id] = op
        return op
