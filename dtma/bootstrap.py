"""The one place that wires adapters into the engine and the API, and runs the agent."""

from __future__ import annotations

import asyncio
import signal
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog
from aiohttp import web

from dtma import __version__, heap
from dtma.adapters.agent_container import AgentContainer
from dtma.adapters.controller_http import ControllerConfig, HttpController, controller_config_from
from dtma.adapters.docker_engine import DockerEngine
from dtma.adapters.docker_runtime import PULL_TIMEOUT_S, DockerRuntime
from dtma.adapters.host_facts import read_host_facts
from dtma.adapters.http_json import HttpJson
from dtma.adapters.secret_files import SecretFileStore, load_or_create_key
from dtma.adapters.sqlite_store import SqliteStateStore
from dtma.adapters.state_repo import StateRepository
from dtma.adapters.vault_config import TokenReport, vault_config_from
from dtma.agent_id import resolve_agent_id
from dtma.api.app import create_app
from dtma.api.disconnects import app_runner
from dtma.api_token import resolve_api_token
from dtma.config import POLICY_KEYS, Settings
from dtma.domain.containers import ObservedContainer
from dtma.domain.heartbeat import AgentFacts
from dtma.domain.retention import RetentionPolicy
from dtma.domain.subnets import DEFAULT_POOL
from dtma.engine import event_kinds as ev
from dtma.engine.agent import RELIST_INTERVAL_S, Agent
from dtma.engine.engine_watch import EngineWatch
from dtma.engine.errors_journal import ErrorJournal
from dtma.engine.heartbeat import HeartbeatSender
from dtma.engine.journal import MAX_SUBSCRIBERS, SUBSCRIBER_QUEUE, Journal
from dtma.engine.probes import ContainerProbe
from dtma.engine.readiness import ReadinessMonitor
from dtma.engine.retention import retention_loop
from dtma.engine.secrets import SecretInjector
from dtma.engine.supervisor import Supervisor
from dtma.errors import ConfigError, DtmaError
from dtma.gateway.call_journal import CallJournal, flush_loop
from dtma.gateway.oauth import JwtVerifier
from dtma.gateway.tokens import AccessTokens
from dtma.observability.metrics import METRICS, MetricsObserver
from dtma.observability.redaction import REDACTOR
from dtma.spec.models import ServerSpec
from dtma.spec.policy import SpecPolicy

AGENT_START_RETRY_S = 2.0
HMAC_KEY_FILE = "secrets-hmac.key"

log = structlog.get_logger("dtma.agent")


def spec_policy(settings: Settings, vault_configured: bool) -> SpecPolicy:
    """The agent's policy for specs, from the DTMA_POLICY_* settings."""
    return SpecPolicy(
        vault_configured=vault_configured,
        **{key: getattr(settings, f"policy_{key}") for key in POLICY_KEYS},
    )


async def serve(settings: Settings) -> None:
    """Run the agent until SIGTERM or SIGINT. Raises ConfigError if it cannot start.

    Containers keep running when the agent stops; the next start adopts them.
    """
    started_at = time.time()
    heap.limit_arenas()  # before the worker threads exist (dtma/heap.py)
    try:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        token = resolve_api_token(settings)
        identity = resolve_agent_id(settings)
        controller = controller_config_from(settings)
    except PermissionError as exc:
        raise ConfigError(
            f"DTMA_STATE_DIR={settings.state_dir}: cannot write {exc.filename} ({exc.strerror})"
        ) from None
    store = SqliteStateStore.in_state_dir(settings.state_dir)
    # No state DB yet: whatever our id left on the engine is held from the reaper (agent.py).
    fresh_state = not store.path.exists()
    engine = DockerEngine(settings.docker_host, threads=settings.docker_threads)
    vault_cfg = vault_config_from(settings)
    vault = None
    if vault_cfg is not None:
        # Deferred: hvac (and what it loads) only for an agent that has a Vault to talk to.
        from dtma.adapters.vault import VaultClient

        vault = VaultClient(vault_cfg)
    files = SecretFileStore(
        settings.secrets_dir, settings.allow_disk_secrets, namespace=identity.value
    )
    injector = SecretInjector(
        vault, files, REDACTOR, load_or_create_key(settings.state_dir / HMAC_KEY_FILE)
    )
    agent = build_agent(
        engine,
        store,
        policy=spec_policy(settings, vault_configured=vault is not None),
        reap_grace=settings.reap_grace,
        relist_interval=settings.relist_interval,
        secrets=injector,
        agent_container=settings.agent_container,
        sse_max_subscribers=settings.sse_max_subscribers,
        sse_queue=settings.sse_queue,
        agent_id=identity.value,
        subnet_pool=settings.subnet_pool,
        hold_orphans=fresh_state and not settings.adopt_orphans,
        max_starts=settings.max_starts,
    )
    retention = RetentionPolicy(
        max_age=settings.retain_age,
        max_events=settings.retain_events,
        max_operations=settings.retain_operations,
        max_revisions=settings.retain_revisions,
        max_calls=settings.retain_calls,
    )
    readiness = ReadinessMonitor(agent.engine)
    METRICS.watch_state(agent.metrics_state)
    access = AccessTokens(agent.repo)  # client tokens of the MCP endpoints
    agent.journal.add_observer(access)  # a deleted toolbox's tokens stop at once
    calls = CallJournal(agent.repo, METRICS, agent.gateway.signature)
    issuer_http = HttpJson()  # OAuth issuers' metadata and keys (unused without issuers)
    oauth = JwtVerifier(settings.oauth_issuers, settings.base_url, issuer_http)
    readiness.add_check(agent.supervisor.down)
    heartbeats = (
        _heartbeat_sender(controller, agent, started_at, settings.state_dir)
        if controller is not None
        else None
    )
    runner: web.AppRunner | None = None
    # Every background task runs under the agent's supervisor: a failure is logged, counted,
    # makes /v1/ready 503 while it waits, and is restarted (engine/supervisor.py).
    supervise = agent.supervisor.spawn
    try:
        schema = await store.open()
        await access.load()
        runner = app_runner(
            create_app(
                token=token.value,
                readiness=readiness,
                agent=agent,
                max_body=settings.max_body,
                metrics_auth=settings.metrics_auth,
                access=access,
                calls=calls,
                mcp_origins=settings.mcp_allowed_origins,
                oauth=oauth,
            ),
            access_log=None,
            handle_signals=False,
        )
        await runner.setup()
        site = web.TCPSite(
            runner,
            settings.listen_host,
            settings.listen_port,
            ssl_context=server_tls_context(settings),
        )
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(f"cannot listen on {settings.listen}: {exc.strerror}") from None
        log.info(
            "agent_started",
            version=__version__,
            agent_id=identity.value,
            agent_id_source=identity.source,
            subnet_pool=settings.subnet_pool,
            listen=settings.listen,
            state_db=str(store.path),
            schema_version=schema,
            api_token=token.source,
            oauth_issuers=[i.issuer for i in settings.oauth_issuers],
        )
        if vault is not None:
            await files.prepare()
            report = _vault_reporter(agent.journal)
            # It returns for a token without a TTL (nothing to renew): that is its end.
            supervise("vault session", "vault", lambda: vault.keep_alive(report), forever=False)
        supervise("agent start", "start", lambda: _start_agent(agent, readiness), forever=False)
        if heartbeats is not None:  # the supervisor's: a failed agent start does not stop it
            supervise("heartbeat", "heartbeat", heartbeats.run)
        supervise(
            "call journal flush", "flush", lambda: flush_loop(calls.flush, access.flush_usage)
        )
        supervise(
            "retention",
            "retention",
            lambda: retention_loop(agent.repo, retention, settings.prune_interval),
        )
        supervise("heap trim", "heap", heap.trim_loop, forever=False)
        await _wait_for_stop_signal()
        log.info("agent_stopping")
    finally:
        await _shut_down(
            ("api", runner.cleanup if runner is not None else None),
            ("agent", agent.stop),  # the supervisor's tasks with it; containers keep running
            ("flush calls", calls.flush),  # the last calls and token uses
            ("flush token uses", access.flush_usage),
            ("oauth issuers", issuer_http.close),
            ("engine", engine.close),
            ("state", store.close),
        )
    log.info("agent_stopped")


async def _shut_down(*steps: tuple[str, Callable[[], Awaitable[object]] | None]) -> None:
    """Run every cleanup step in order, whatever an earlier one (or a dead task) raised."""
    for name, step in steps:
        if step is None:
            continue
        try:
            await step()
        except Exception:
            log.exception("shutdown_step_failed", step=name)


def server_tls_context(settings: Settings) -> ssl.SSLContext | None:
    """TLS for the API when DTMA_TLS_CERT/KEY are set; mTLS when DTMA_TLS_CLIENT_CA is too."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
        if settings.tls_client_ca is not None:
            context.load_verify_locations(settings.tls_client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the API's TLS files: {exc}") from None
    return context


def build_agent(
    engine: DockerEngine,
    store: SqliteStateStore,
    *,
    policy: SpecPolicy,
    reap_grace: float,
    relist_interval: float = RELIST_INTERVAL_S,
    pull_timeout: float = PULL_TIMEOUT_S,
    secrets: SecretInjector | None = None,
    agent_container: str | None = None,
    sse_max_subscribers: int = MAX_SUBSCRIBERS,
    sse_queue: int = SUBSCRIBER_QUEUE,
    agent_id: str,
    subnet_pool: str = DEFAULT_POOL,
    hold_orphans: bool = False,
    max_starts: int | None = None,
) -> Agent:
    """Wire the Docker, MCP and SQLite adapters into an Agent (tests use this too)."""
    runtime = DockerRuntime(
        engine,
        agent_id=agent_id,
        subnet_pool=subnet_pool,
        pull_timeout=pull_timeout,
        agent_container=AgentContainer(agent_container),
    )
    repo = StateRepository(store)

    def probe_factory(
        server: ServerSpec, container: ObservedContainer, fresh: bool
    ) -> ContainerProbe:
        return ContainerProbe(
            engine.client, server, container, fresh=fresh, attach_pool=engine.attach_pool
        )

    journal = Journal(
        repo,
        REDACTOR.redact,
        [ErrorJournal(repo), MetricsObserver(METRICS)],
        max_subscribers=sse_max_subscribers,
        queue_size=sse_queue,
    )
    watch = EngineWatch(engine)
    watch.report_to(_engine_reporter(journal))
    return Agent(
        runtime=runtime,
        repo=repo,
        engine=watch,
        supervisor=Supervisor(),
        journal=journal,
        probe_factory=probe_factory,
        policy=policy,
        reap_grace=reap_grace,
        relist_interval=relist_interval,
        events_source=runtime.events,
        secrets=secrets,
        agent_id=agent_id,
        hold_orphans=hold_orphans,
        max_starts=max_starts,
    )


def _heartbeat_sender(
    controller: ControllerConfig, agent: Agent, started_at: float, state_dir: Path
) -> HeartbeatSender:
    """The heartbeat loop, wired: a journal observer (pushes), GET /v1/agent and the metrics."""
    sender = HeartbeatSender(
        agent=AgentFacts(
            id=agent.agent_id,
            version=__version__,
            started_at=round(started_at, 3),
            url=controller.advertise_url,
            labels=controller.labels,
        ),
        transport=HttpController(controller, agent.agent_id, timeout=controller.interval),
        interval=controller.interval,
        toolboxes=agent.statuses,
        host=lambda: read_host_facts(state_dir),
    )
    agent.journal.add_observer(sender)
    agent.controller = sender.describe
    METRICS.watch_heartbeat(sender.age, controller.interval)
    return sender


def _vault_reporter(journal: Journal) -> TokenReport:
    """Agent-level events for the token turning unusable and recovering; a failure event
    lands in the error journal (category from its message: auth or dependency)."""

    async def report(failed: bool, reason: str, message: str) -> None:
        kind = ev.VAULT_AUTH_FAILED if failed else ev.VAULT_AUTH_RECOVERED
        await journal.emit(kind, reason=reason, message=message)

    return report


def _engine_reporter(journal: Journal) -> Callable[[bool, str], Awaitable[None]]:
    """Agent-level events for the engine going away and coming back (engine/engine_watch.py)."""

    async def report(reachable: bool, message: str) -> None:
        kind = ev.ENGINE_REACHABLE if reachable else ev.ENGINE_UNREACHABLE
        await journal.emit(
            kind, reason="engine_restarted" if reachable else "unreachable", message=message
        )

    return report


async def _start_agent(agent: Agent, readiness: ReadinessMonitor) -> None:
    """Recover toolboxes once Docker answers; retry until it does. Ready only after that."""
    while True:
        try:
            await agent.start()
        except DtmaError as exc:
            log.warning("agent_start_failed", error=exc.message, retry_in=AGENT_START_RETRY_S)
            await agent.stop(final=False)
            await asyncio.sleep(AGENT_START_RETRY_S)
            continue
        except Exception:
            # Undo the half start before the supervisor runs this again: its loops would run
            # twice otherwise.
            await agent.stop(final=False)
            raise
        readiness.mark_state_loaded()
        log.info("agent_recovered")
        return


async def _wait_for_stop_signal() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
