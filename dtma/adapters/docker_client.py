"""Construct docker-py clients and translate docker-py exceptions into DtmaErrors.

docker-py is synchronous: every call made with a client from here must run in a worker thread
(asyncio.to_thread), never on the event loop.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions

from dtma.errors import ContainerNotFound, DockerError, DockerUnavailable, DtmaError, ImageNotFound
from dtma.observability.metrics import METRICS

T = TypeVar("T")


DEFAULT_SOCKET = "/var/run/docker.sock"


def make_docker_client(
    docker_host: str | None, timeout: float = 60, max_pool_size: int = 10
) -> Any:
    """A docker-py client for DOCKER_HOST (or docker-py's default). Blocking; call in a thread.

    `max_pool_size` bounds the HTTP connections kept to the engine (docker-py's default of 10
    makes more concurrent calls wait for a connection, so size it for the calling threads).

    A unix socket is tried first with a socket of our own: docker-py leaks its socket when the
    connection is refused, and our message names the path.
    """
    preflight(docker_host)
    if docker_host:
        return docker.DockerClient(
            base_url=docker_host, timeout=int(timeout), max_pool_size=max_pool_size
        )
    return docker.from_env(timeout=int(timeout), max_pool_size=max_pool_size)


def preflight(docker_host: str | None) -> None:
    """For a unix socket: connect a socket of our own, a new connection. Pooled keep-alive
    connections outlive the socket's path, so an answer on one of them does not show that the
    daemon still listens. Raises DockerUnavailable. Blocking; call in a thread."""
    host = docker_host or os.environ.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"
    if host.startswith("unix://"):
        _preflight_unix(host.removeprefix("unix://"))


def _preflight_unix(path: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        try:
            sock.connect(path)
        except FileNotFoundError:
            raise DockerUnavailable(
                f"Docker engine unreachable: no socket at {path} (is dockerd running?)"
            ) from None
        except OSError as exc:
            raise DockerUnavailable(
                f"Docker engine unreachable at {path}: {exc.strerror or exc}"
            ) from None


def translate(exc: Exception, what: str) -> DtmaError:
    """Map a docker-py/requests exception to a transient or permanent DtmaError."""
    if isinstance(exc, docker.errors.ImageNotFound):
        return ImageNotFound(f"{what}: image not found: {_explanation(exc)}")
    if isinstance(exc, docker.errors.NotFound):
        return ContainerNotFound(f"{what}: not found: {_explanation(exc)}")
    if isinstance(exc, docker.errors.APIError):
        status = exc.status_code or 0
        err: DtmaError = (DockerUnavailable if status >= 500 else DockerError)(
            f"{what}: Docker answered {status}: {_explanation(exc)}"
        )
        return err
    if isinstance(exc, requests.exceptions.ConnectionError | docker.errors.DockerException):
        return DockerUnavailable(f"{what}: Docker engine unreachable: {exc}")
    if isinstance(exc, requests.exceptions.Timeout | TimeoutError):
        return DockerUnavailable(f"{what}: Docker engine timed out")
    return DockerError(f"{what}: {type(exc).__name__}: {exc}")


def call(what: str, fn: Callable[[], T]) -> T:
    """Run a blocking docker-py call, translating its exceptions. Call inside a worker thread."""
    try:
        return fn()
    except DtmaError:
        raise
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        err = translate(exc, what)
        METRICS.docker_errors.labels(type(err).__name__).inc()
        raise err from exc


def _explanation(exc: docker.errors.DockerException) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc)
