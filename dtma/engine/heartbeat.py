"""The heartbeat loop: tells the controller what this agent runs (docs/controller.md).

`HeartbeatSender.run` is a supervised background task (started by bootstrap under the agent's
Supervisor, cancelled at shutdown). It is also a journal observer: a toolbox's phase change,
deletion or new rollout pushes a heartbeat, debounced (domain/heartbeat.SendSchedule), so the
controller learns it within a second without the loop ever polling the DB for changes.

Each heartbeat is built from the state as it is when it is sent (the listing, the host facts),
never queued: when the controller is down nothing piles up. Transient failures (unreachable,
timeout, 5xx) are retried by tenacity with exponential backoff and jitter within one interval;
any other failure (401/403, another 4xx, a redirect, a garbage answer) waits for the next
interval. Whatever the controller does, the loop only logs, counts and moves on: no exception
of the controller's making leaves it, and nothing else in the agent waits on it.
Concurrency: loop-only; one sender per agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_result, wait_exponential_jitter

from dtma.domain.heartbeat import (
    UNAUTHORIZED,
    AckLedger,
    AgentFacts,
    Answer,
    HostFacts,
    SendSchedule,
    counts_of,
    entry_from_status,
    payload,
)
from dtma.domain.records import EventRecord
from dtma.engine import event_kinds as ev
from dtma.observability.metrics import METRICS

log = structlog.get_logger("dtma.heartbeat")

# Events after which the controller should hear from us within a second.
PUSH_KINDS = frozenset(
    {ev.TOOLBOX_PHASE, ev.TOOLBOX_DELETED, ev.ROLLOUT_STARTED, ev.ROLLBACK_STARTED}
)
RETRY_INITIAL_S = 0.5


class HeartbeatTransport(Protocol):
    """Sends one encoded heartbeat; returns how the controller took it, never raises for it."""

    url: str

    async def send(self, body: bytes) -> Answer: ...

    async def close(self) -> None: ...


class HeartbeatSender:
    def __init__(
        self,
        *,
        agent: AgentFacts,
        transport: HeartbeatTransport,
        interval: float,
        toolboxes: Callable[[], Awaitable[list[dict[str, Any]]]],
        host: Callable[[], Awaitable[HostFacts]],
        clock: Callable[[], float] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._agent = agent
        self._transport = transport
        self._toolboxes = toolboxes
        self._host = host
        self._clock = clock
        self._wall = wall
        self._ledger = AckLedger()
        self._schedule: SendSchedule | None = None
        self._interval = interval
        self._wake = asyncio.Event()
        self._started: float | None = None
        self._last_ack: float | None = None  # self._now() of the last acknowledged heartbeat
        self.last_success: float | None = None  # wall clock, for GET /v1/agent
        self.last_error: str | None = None
        self.consecutive_failures = 0
        self.sent = 0  # attempts, for tests and the bench
        self._failing: str | None = None  # the outcome of the failing streak, if any

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    # -- inputs ------------------------------------------------------------------------------

    async def observe(self, event: EventRecord) -> None:
        """Journal observer: a phase change (or deletion, or new rollout) pushes a heartbeat."""
        if event.kind in PUSH_KINDS and self._schedule is not None:
            self._schedule.changed(self._now())
            self._wake.set()

    # -- outputs -----------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """The `controller` object of GET /v1/agent."""
        return {
            "url": self._transport.url,
            "interval": self._interval,
            "last_success": self.last_success,
            "last_error": self.last_error,
            "consecutive_failures": self.consecutive_failures,
        }

    def age(self) -> float:
        """Seconds since the last acknowledged heartbeat (since the loop began, if none was)."""
        since = self._last_ack if self._last_ack is not None else self._started
        return 0.0 if since is None else max(0.0, self._now() - since)

    # -- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Send heartbeats until cancelled. A restart (by the Supervisor) keeps the ledger, so
        what the controller acknowledged stays known."""
        now = self._now()
        if self._started is None:
            self._started = now
        self._schedule = SendSchedule(self._interval, start=now)
        try:
            while True:
                await self._until_due(self._schedule)
                started = self._now()
                answer = await self._send_within_interval(started)
                self._schedule.attempted(started, self._now(), answer.acknowledged)
                self._log_tick(answer)
        finally:
            await self._transport.close()

    async def _until_due(self, schedule: SendSchedule) -> None:
        while True:
            self._wake.clear()  # before reading the schedule: a change after it wakes us
            delay = schedule.due() - self._now()
            if delay <= 0:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def _send_within_interval(self, started: float) -> Answer:
        """One heartbeat, retried while the failure is transient and the interval lasts."""
        budget = self._interval
        backoff = wait_exponential_jitter(
            multiplier=RETRY_INITIAL_S, max=budget / 2, jitter=RETRY_INITIAL_S
        )

        def wait(state: RetryCallState) -> float:
            return max(0.0, min(backoff(state), started + budget - self._now()))

        def stop(state: RetryCallState) -> bool:
            return self._now() - started >= budget

        def last(state: RetryCallState) -> Answer:
            assert state.outcome is not None
            result: Answer = state.outcome.result()
            return result

        retrying = AsyncRetrying(
            retry=retry_if_result(lambda a: isinstance(a, Answer) and a.transient),
            wait=wait,
            stop=stop,
            retry_error_callback=last,
            sleep=asyncio.sleep,
        )
        answer: Answer = await retrying(self._attempt)
        return answer

    async def _attempt(self) -> Answer:
        statuses = await self._toolboxes()
        host = await self._host()
        entries = [entry_from_status(s) for s in statuses]
        containers = sum(len(s["servers"]) for s in statuses)
        plan = self._ledger.plan(entries)
        body = payload(
            self._agent, plan, round(self._wall(), 3), host, counts_of(entries, containers)
        )
        answer = await self._transport.send(json.dumps(body, separators=(",", ":")).encode())
        self.sent += 1
        METRICS.controller_heartbeats.labels(answer.outcome).inc()
        if answer.acknowledged:
            self._ledger.acknowledged(plan, answer.resync)
            self._last_ack = self._now()
            self.last_success = self._wall()
            self.consecutive_failures = 0
        else:
            self.consecutive_failures += 1
            self.last_error = (
                f"{answer.outcome}: {answer.detail}" if answer.detail else answer.outcome
            )
            log.debug("controller_heartbeat_attempt_failed", outcome=answer.outcome, seq=plan.seq)
        return answer

    def _log_tick(self, answer: Answer) -> None:
        """One line per failed interval (not per attempt), and one when it works again."""
        if answer.acknowledged:
            if self._failing:
                log.info("controller_heartbeat_recovered", url=self._transport.url)
            self._failing = None
            return
        if self._failing == answer.outcome:
            return
        self._failing = answer.outcome
        fields: Mapping[str, Any] = {
            "url": self._transport.url,
            "outcome": answer.outcome,
            "status": answer.status,
            "detail": answer.detail,
            "consecutive_failures": self.consecutive_failures,
            "next_in": self._interval,
        }
        if answer.outcome == UNAUTHORIZED:
            log.error(
                "controller_refused_token",
                message="the controller refuses DTMA_CONTROLLER_TOKEN; retrying once per interval",
                **fields,
            )
        else:
            log.warning("controller_heartbeat_failed", **fields)
