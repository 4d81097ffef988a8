"""Sandboxes that run untrusted code: one `Sandbox` interface, three backends.

``open_sandbox(kind)`` with kind ``docker`` (containers through the Docker SDK,
default when a daemon answers), ``bwrap`` (bubblewrap namespaces) or
``process`` (rlimits and a timeout only: NOT a security boundary, never chosen
automatically). With no kind, ``$LPCA_SANDBOX`` decides, else the first
available of docker, bwrap. An unavailable backend raises `SandboxUnavailable`
naming what is missing.

    with open_sandbox("bwrap") as sb:
        r = sb.run({"main.py": "print(2 + 2)"}, ["python3", "main.py"], Limits(timeout=5))
        assert r.stdout == "4\\n"
"""

from __future__ import annotations

import os
import threading
from typing import Any

from lpca_envs.code.sandbox._api import (
    ExecResult,
    Limits,
    Outcome,
    Sandbox,
    SandboxError,
    SandboxUnavailable,
)

#: Backend names, in the order `open_sandbox()` tries them when none is named (process never).
AUTO_ORDER = ("docker", "bwrap")
BACKENDS = ("docker", "bwrap", "process")
ENV_VAR = "LPCA_SANDBOX"


def backend_class(kind: str) -> type[Sandbox]:
    if kind == "docker":
        from lpca_envs.code.sandbox._docker import DockerSandbox

        return DockerSandbox
    if kind == "bwrap":
        from lpca_envs.code.sandbox._bwrap import BwrapSandbox

        return BwrapSandbox
    if kind == "process":
        from lpca_envs.code.sandbox._process import ProcessSandbox

        return ProcessSandbox
    raise SandboxError(f"unknown sandbox {kind!r}; choose one of {', '.join(BACKENDS)}")


_REASONS: dict[str, str | None] = {}
_REASONS_LOCK = threading.Lock()


def unavailable_reason(kind: str) -> str | None:
    """None when backend `kind` can run here, else what is missing (cached per process)."""
    cls = backend_class(kind)
    with _REASONS_LOCK:
        if kind not in _REASONS:
            _REASONS[kind] = cls.unavailable_reason()
        return _REASONS[kind]


def resolve_kind(kind: str | None = None) -> str:
    """The backend `open_sandbox(kind)` would use: `kind`, else $LPCA_SANDBOX, else docker/bwrap."""
    kind = kind or os.environ.get(ENV_VAR) or None
    if kind is not None:
        backend_class(kind)
        why = unavailable_reason(kind)
        if why:
            raise SandboxUnavailable(f"sandbox {kind!r} is unavailable: {why}")
        return kind
    reasons = []
    for k in AUTO_ORDER:
        why = unavailable_reason(k)
        if why is None:
            return k
        reasons.append(f"{k}: {why}")
    raise SandboxUnavailable(
        "no sandbox is available (" + "; ".join(reasons) + "). Install one (.ci/setup_sandbox.sh), or "
        f"choose the unisolated one explicitly with {ENV_VAR}=process / --sandbox process"
    )


def open_sandbox(kind: str | None = None, **options: Any) -> Sandbox:
    """A new sandbox of backend `kind` (see module doc); `options` go to its constructor."""
    return backend_class(resolve_kind(kind))(**options)


_SHARED: dict[str, Sandbox] = {}


def shared_sandbox(kind: str | None = None) -> Sandbox:
    """One sandbox per backend per process, shared by the code families (its warm pool too)."""
    k = resolve_kind(kind)
    with _REASONS_LOCK:
        sb = _SHARED.get(k)
        if sb is None:
            sb = _SHARED[k] = backend_class(k)()
        return sb


__all__ = [
    "AUTO_ORDER",
    "BACKENDS",
    "ENV_VAR",
    "ExecResult",
    "Limits",
    "Outcome",
    "Sandbox",
    "SandboxError",
    "SandboxUnavailable",
    "backend_class",
    "open_sandbox",
    "resolve_kind",
    "shared_sandbox",
    "unavailable_reason",
]
