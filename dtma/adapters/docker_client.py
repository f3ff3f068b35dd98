"""Construct docker-py clients and translate docker-py exceptions into DtmaErrors.

docker-py is synchronous: every call made with a client from here must run in a worker thread
(asyncio.to_thread), never on the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions

from dtma.errors import ContainerNotFound, DockerError, DockerUnavailable, DtmaError, ImageNotFound

T = TypeVar("T")


def make_docker_client(docker_host: str | None, timeout: float = 60) -> Any:
    """A docker-py client for DOCKER_HOST (or docker-py's default). Blocking; call in a thread."""
    if docker_host:
        return docker.DockerClient(base_url=docker_host, timeout=int(timeout))
    return docker.from_env(timeout=int(timeout))


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
        raise translate(exc, what) from exc


def _explanation(exc: docker.errors.DockerException) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc)
