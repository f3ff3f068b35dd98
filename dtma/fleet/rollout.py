"""`dtma fleet apply`: a gated rollout across hosts (Nomad's canaries, lifted to the fleet).

Each agent gates its own rollout; this module only orders the agents (`plan.plan_waves`),
waits for each agent's verdict (`PUT ?wait`, then operation polling), halts after the first
wave with a failure, and on request rolls back the agents this run updated. It holds no state
of its own between runs: a re-run asks every agent again, and an agent already at the spec's
hash answers "unchanged", so a halted or interrupted rollout resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from dtma.api.schemas import ApplyAcceptedOut, ToolboxStatusOut
from dtma.client import ApiError, DtmaClient, Unreachable
from dtma.fleet.fanout import STRANGE_ANSWERS, Connection, fan_out, strange_answer
from dtma.fleet.inventory import FleetAgent
from dtma.fleet.plan import Wave, plan_waves
from dtma.fleet.status import serving

Outcome = Literal["updated", "unchanged", "gate_failed", "error", "unreachable"]
SETTLE_POLL_S = 0.5


@dataclass(frozen=True)
class AgentResult:
    """What one agent's rollout ended as. `before` is the revision that served before this run
    (None: the toolbox was new there), the rollback target; `state` is the agent's operation
    state (succeeded, rolled_back, failed) when there was an operation."""

    agent: FleetAgent
    outcome: Outcome
    before: int | None = None
    after: int | None = None
    state: str | None = None
    message: str = ""
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.outcome in ("updated", "unchanged")


@dataclass(frozen=True)
class _Verdict:
    outcome: Outcome
    message: str = ""
    after: int | None = None
    state: str | None = None


@dataclass(frozen=True)
class RevertResult:
    agent: FleetAgent
    ok: bool
    message: str


@dataclass(frozen=True)
class Progress:
    """One progress line: a wave starting, an agent's verdict, the halt, a rollback."""

    kind: Literal["wave", "agent", "halt", "revert", "done"]
    text: str
    wave: str | None = None
    result: AgentResult | None = None
    revert: RevertResult | None = None


@dataclass
class RolloutReport:
    results: list[AgentResult] = field(default_factory=list)
    untouched: list[FleetAgent] = field(default_factory=list)
    reverts: list[RevertResult] = field(default_factory=list)

    @property
    def failed(self) -> list[AgentResult]:
        return [r for r in self.results if not r.passed]

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class RolloutOptions:
    toolbox: str
    spec: bytes
    canary: int = 1
    batch: int = 10
    parallel: int = 16
    timeout: float = 600.0  # per agent: its whole rollout, gate included
    rollback_on_failure: bool = False


class FleetRollout:
    """Runs one fleet rollout. Not reentrant; one instance per run. Cancelling `run` cancels
    the requests in flight; rollouts the agents already accepted go on, each gated by its own
    agent, and a re-run picks them up."""

    def __init__(
        self, options: RolloutOptions, conn: Connection, progress: Callable[[Progress], None]
    ) -> None:
        self.opt = options
        self.conn = conn
        self.progress = progress

    async def run(self, agents: list[FleetAgent]) -> RolloutReport:
        report = RolloutReport()
        waves = plan_waves(agents, self.opt.canary, self.opt.batch)
        for i, wave in enumerate(waves):
            self.progress(Progress("wave", f"{wave.label}: {_names(wave.agents)}", wave.label))
            results = await self._wave(wave)
            report.results += results
            failed = [r for r in results if not r.passed]
            if failed:
                report.untouched = [a for w in waves[i + 1 :] for a in w.agents]
                first = failed[0]
                self.progress(
                    Progress(
                        "halt",
                        f"halted: {first.agent.name} {first.outcome}; "
                        f"{len(report.untouched)} agents untouched",
                        wave.label,
                        result=first,
                    )
                )
                if self.opt.rollback_on_failure:
                    report.reverts = await self._revert(report.results)
                return report
        updated = sum(r.outcome == "updated" for r in report.results)
        self.progress(
            Progress(
                "done",
                f"done: {updated} updated, {len(report.results) - updated} already at the spec",
            )
        )
        return report

    async def _wave(self, wave: Wave) -> list[AgentResult]:
        async def one(agent: FleetAgent) -> AgentResult:
            result = await self._apply_one(agent)
            self.progress(Progress("agent", _describe(result), wave.label, result=result))
            return result

        return await fan_out(wave.agents, one, self.opt.parallel)

    async def _apply_one(self, agent: FleetAgent) -> AgentResult:
        started = time.monotonic()
        before: int | None = None
        try:
            async with asyncio.timeout(self.opt.timeout), self.conn.client(agent) as client:
                before = await serving_revision(client, self.opt.toolbox)
                verdict = await self._verdict(client)
        except TimeoutError:
            verdict = _Verdict("error", f"no verdict within {self.opt.timeout:g}s")
        except Unreachable as exc:
            verdict = _Verdict("unreachable", str(exc))
        except ApiError as exc:
            verdict = _Verdict("error", _api_error(exc))
        except STRANGE_ANSWERS as exc:
            verdict = _Verdict("error", strange_answer(exc))
        return AgentResult(
            agent,
            verdict.outcome,
            before=before,
            after=verdict.after,
            state=verdict.state,
            message=verdict.message,
            seconds=round(time.monotonic() - started, 1),
        )

    async def _verdict(self, client: DtmaClient) -> _Verdict:
        """PUT the spec and wait for the agent's own gate to end."""
        # The agent's wait ends a little before our timeout, so a gate still open by then comes
        # back as its running operation (polled below) instead of a request cut off mid-way.
        wait = max(1.0, self.opt.timeout - 5)
        answer = await client.apply(self.opt.toolbox, self.opt.spec, wait=wait)
        assert not isinstance(answer, ApplyAcceptedOut)  # a PUT with ?wait answers a status
        if answer.unchanged:
            status = await _settled(client, self.opt.toolbox)
            now = serving(status)
            if status.phase == "healthy":
                return _Verdict("unchanged", after=now)
            return _Verdict("gate_failed", f"already at the spec but {status.phase}", after=now)
        op = answer.operation
        assert op is not None
        if op.state == "running":  # ?wait is capped by the agent; poll the rest
            op = await client.wait_operation(op.id, self.opt.timeout)
        if op.state == "succeeded":
            return _Verdict("updated", after=op.revision, state=op.state)
        if op.state == "running":
            return _Verdict("error", "still rolling out", state=op.state)
        return _Verdict("gate_failed", op.error or "", state=op.state)

    async def _revert(self, results: list[AgentResult]) -> list[RevertResult]:
        """Roll every agent this run updated back to the revision it served before (or remove
        the toolbox where this run created it). Agents whose own gate failed already reverted
        themselves (or were left as their agent's rules say) and are not touched again."""
        todo = [r for r in results if r.outcome == "updated"]
        if not todo:
            self.progress(Progress("revert", "rollback: no agent was updated; nothing to undo"))
            return []

        async def one(r: AgentResult) -> RevertResult:
            out = await self._revert_one(r)
            self.progress(
                Progress("revert", f"rollback {out.agent.name}: {out.message}", revert=out)
            )
            return out

        return await fan_out(todo, one, self.opt.parallel)

    async def _revert_one(self, r: AgentResult) -> RevertResult:
        try:
            async with asyncio.timeout(self.opt.timeout), self.conn.client(r.agent) as client:
                if r.before is None:
                    ref = await client.delete(self.opt.toolbox)
                    verb = f"removed {self.opt.toolbox} (new on this agent)"
                else:
                    ref = await client.rollback(self.opt.toolbox, r.before)
                    verb = f"back on revision {r.before}"
                op = await client.wait_operation(ref.operation, self.opt.timeout)
        except TimeoutError:
            return RevertResult(r.agent, False, f"no verdict within {self.opt.timeout:g}s")
        except Unreachable as exc:
            return RevertResult(r.agent, False, str(exc))
        except ApiError as exc:
            return RevertResult(r.agent, False, _api_error(exc))
        except STRANGE_ANSWERS as exc:
            return RevertResult(r.agent, False, strange_answer(exc))
        if op.state == "succeeded":
            return RevertResult(r.agent, True, verb)
        return RevertResult(r.agent, False, f"{op.kind} {op.state}: {op.error or ''}".rstrip(": "))


async def serving_revision(client: DtmaClient, toolbox: str) -> int | None:
    """The revision the toolbox serves on this agent now; None if the agent does not have it."""
    try:
        return serving(await client.get(toolbox))
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


async def _settled(client: DtmaClient, toolbox: str) -> ToolboxStatusOut:
    """The toolbox's status once it is not deploying (an earlier run's rollout may still be in
    its gate when a re-run finds the spec unchanged). The caller's timeout bounds the wait."""
    while True:
        status = await client.get(toolbox)
        if status.phase != "deploying":
            return status
        await asyncio.sleep(SETTLE_POLL_S)


def _api_error(exc: ApiError) -> str:
    where = "; ".join(
        f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in exc.details
    )
    return f"{exc.status} {exc.code}: {exc.message}" + (f" ({where})" if where else "")


def _names(agents: tuple[FleetAgent, ...]) -> str:
    shown = ", ".join(a.name for a in agents[:5])
    return shown + (f" and {len(agents) - 5} more" if len(agents) > 5 else "")


def _describe(r: AgentResult) -> str:
    took = f" ({r.seconds:g}s)"
    if r.outcome == "updated":
        frm = "new" if r.before is None else f"revision {r.before}"
        return f"{r.agent.name}: {frm} -> revision {r.after} healthy{took}"
    if r.outcome == "unchanged":
        return f"{r.agent.name}: already at revision {r.after}, skipped"
    what = f"gate {r.state}" if r.outcome == "gate_failed" and r.state else r.outcome
    return f"{r.agent.name}: {what}: {r.message}{took}"
