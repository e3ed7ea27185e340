"""Starting Ray, and checking a cluster can host N model actors: what ``evaluate --workers`` and
``serve --replicas`` share."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import OmnizipError, UsageError


def start_ray(ray: Any, address: str | None, *, log_to_driver: bool = True, env_names: Iterable[str] = (),
              **extra: Any) -> bool:
    """Connect to ``address`` (None: start a local Ray) unless Ray is already initialised; True when
    this call initialised it. A local Ray's workers import this package from this checkout
    (``PYTHONPATH``) and get the environment variables ``env_names`` that are set here; ``extra``:
    more ``ray.init`` arguments."""
    if ray.is_initialized():
        return False
    init: dict[str, Any] = {"address": address, "include_dashboard": False, "logging_level": "warning",
                            "log_to_driver": log_to_driver, **extra}
    if address is None:
        package_root = str(Path(__file__).resolve().parents[1])
        pythonpath = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
        env = {name: os.environ[name] for name in env_names if name in os.environ}
        init["runtime_env"] = {"env_vars": {"PYTHONPATH": pythonpath, **env}}
    try:
        ray.init(**init)
    except ConnectionError as exc:
        raise OmnizipError(f"could not connect to the Ray cluster at {address}: {exc}") from None
    return True


def check_resources(ray: Any, count: int, what: str, gpus: float, cpus: float, hint: str) -> None:
    """A one-line :class:`UsageError` when the cluster lacks the GPUs or CPUs for ``count`` actors
    (``what``: "workers", "replicas") of ``gpus`` and ``cpus`` each."""
    available = ray.cluster_resources()
    need = {"GPU": gpus * count, "CPU": cpus * count}
    short = [f"{need[k]:g} {k}s (the cluster has {available.get(k, 0):g})" for k in need
             if need[k] > available.get(k, 0) + 1e-9]
    if short:
        raise UsageError(f"{count} {what} need {' and '.join(short)}", hint=hint)
