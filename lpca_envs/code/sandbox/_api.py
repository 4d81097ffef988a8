"""`Sandbox`, `Limits`, `ExecResult` and the errors: the one interface every backend implements.

A backend only knows how to start the supervisor (``supervisor.py``) somewhere
isolated and hand it a job on stdin; writing files, rlimits, output caps, the
wall-clock timeout and killing what the command leaves behind all happen in the
supervisor, so every backend enforces them the same way.
"""

from __future__ import annotations

import base64
import enum
import json
import posixpath
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

from lpca_envs.errors import LPCAError

_MARK = b"LPCA-SUPERVISOR "
#: Extra seconds a backend waits for the supervisor beyond the command's timeout
#: (starting the sandbox, writing files, killing leftovers).
GRACE_SECONDS = 10.0
#: The supervisor's environment. A fixed hash seed makes runs of the same code reproducible
#: (set and dict orders of strings), since commands run in forks of the supervisor.
SUPERVISOR_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8",
                  "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip


class SandboxError(LPCAError, RuntimeError):
    """A sandbox could not run a command (infrastructure failure, not the command's)."""


class SandboxUnavailable(SandboxError):
    """The chosen sandbox backend cannot run on this machine; the message says what is missing."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits of one run. Every backend enforces all of them.

    ``memory_mb`` is a cgroup limit under docker and an address-space rlimit
    (per process) under bwrap/process; ``pids`` is a cgroup pids limit under
    docker and RLIMIT_NPROC elsewhere; ``cpus`` is enforced by docker only.
    ``file_mb`` caps each file (RLIMIT_FSIZE); ``disk_mb`` caps the total a run can
    write across every writable place of an isolated sandbox (docker, bwrap): the
    work dir holds half of it, ``/tmp`` and ``/dev/shm`` a quarter each, each a
    size-capped tmpfs, and nothing else is writable. The process backend writes to
    a host temp dir: only ``file_mb`` applies there.
    """

    timeout: float = 10.0
    memory_mb: int = 256
    pids: int = 64
    cpus: float = 1.0
    output_bytes: int = 64 * 1024
    file_mb: int = 16
    disk_mb: int = 128

    def __post_init__(self) -> None:
        for name in ("timeout", "memory_mb", "pids", "cpus", "output_bytes", "file_mb", "disk_mb"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
                raise SandboxError(f"Limits.{name} must be a positive number, got {v!r}")

    def disk_bytes(self) -> dict[str, int]:
        """Size in bytes of each writable tmpfs of an isolated sandbox; they sum to ``disk_mb``."""
        total = int(self.disk_mb * (1 << 20))
        tmp = shm = max(total // 4, 4096)
        return {"work": max(total - tmp - shm, 4096), "tmp": tmp, "shm": shm}


class Outcome(enum.StrEnum):
    """How a run ended, one value per case (`ExecResult.outcome`)."""

    OK = "ok"  #: exit status 0 within every limit
    FAILED = "failed"  #: a non-zero exit status
    KILLED = "killed"  #: ended by a signal
    TIMEOUT = "timeout"  #: the wall-clock limit
    OOM = "oom"  #: the memory limit
    OUTPUT_CAP = "output_cap"  #: an output stream passed `Limits.output_bytes`
    #: the sandbox's own supervisor died or stopped answering (killed from inside or outside)
    SANDBOX_LOST = "sandbox_lost"


@dataclass(frozen=True, slots=True)
class ExecResult:
    """What one command did in a sandbox.

    ``exit_code`` is negative when a signal ended the command. It is always an int:
    when the run produced no exit status of its own (the sandbox's supervisor was
    killed, or did not answer in time and was killed), it is the supervisor's
    status (negative: the signal), ``outcome`` is ``SANDBOX_LOST`` or ``TIMEOUT``
    and ``error`` says what happened. Output is
    decoded UTF-8 (invalid bytes replaced), each stream cut at
    ``Limits.output_bytes``; passing a cap kills the command
    (``output_truncated``). ``stragglers`` counts processes the command left
    running, killed after it.
    """

    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool
    oom: bool
    duration: float
    output_truncated: bool = False
    stragglers: int = 0
    backend: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        """Exited with status 0, in time, within every limit."""
        return self.outcome is Outcome.OK

    @property
    def outcome(self) -> Outcome:
        """The one `Outcome` that describes how the run ended (the first that applies, in this order:
        sandbox lost, timeout, out of memory, output cap, signal, exit status)."""
        if self.error and not self.timed_out:
            return Outcome.SANDBOX_LOST
        if self.timed_out:
            return Outcome.TIMEOUT
        if self.oom:
            return Outcome.OOM
        if self.output_truncated:
            return Outcome.OUTPUT_CAP
        if self.exit_code < 0:
            return Outcome.KILLED
        return Outcome.OK if self.exit_code == 0 else Outcome.FAILED

    def summary(self) -> str:
        """One line for people: exit status, limits hit, duration."""
        if self.error:
            what = self.error
        elif self.timed_out:
            what = "timed out"
        elif self.exit_code < 0:
            what = f"killed by signal {-self.exit_code}"
        else:
            what = f"exit {self.exit_code}"
        extra = [w for w, on in (("out of memory", self.oom), ("output cap", self.output_truncated)) if on]
        return f"{self.backend}: {what}{'; ' + ', '.join(extra) if extra else ''} ({self.duration:.2f}s)"


@cache
def supervisor_source() -> str:
    return (Path(__file__).with_name("supervisor.py")).read_text()


def _check_files(files: Mapping[str, str | bytes]) -> dict[str, str]:
    out = {}
    for rel, content in files.items():
        norm = posixpath.normpath(rel) if isinstance(rel, str) else ""
        if not norm or norm.startswith(("/", "..")) or norm == ".":
            raise SandboxError(f"file names must be relative paths inside the work dir, got {rel!r}")
        if isinstance(content, str):
            content = content.encode()
        elif not isinstance(content, bytes):
            raise SandboxError(f"file {rel!r}: content must be str or bytes, got {type(content).__name__}")
        out[norm] = base64.b64encode(content).decode()
    return out


class Sandbox(ABC):
    """Runs a command on a set of files, isolated, under `Limits`.

    ``run(files, command, limits) -> ExecResult``: `files` (relative path ->
    text or bytes) are written into a fresh work dir, `command` runs there with
    no stdin. Sandboxes are thread-safe and hold resources (warm containers):
    use them as context managers or call `close`.
    """

    name: ClassVar[str] = ""
    #: True when the backend is a security boundary (its own namespaces); `process` is not.
    isolated: ClassVar[bool] = True

    @classmethod
    @abstractmethod
    def unavailable_reason(cls) -> str | None:
        """None when this backend can run here, else what is missing and how to get it."""

    def run(
        self,
        files: Mapping[str, str | bytes],
        command: Sequence[str],
        limits: Limits | None = None,
    ) -> ExecResult:
        limits = limits or Limits()
        if isinstance(command, str) or not command or not all(isinstance(c, str) for c in command):
            raise SandboxError(f"command must be a non-empty list of str, got {command!r}")
        job = {
            "files": _check_files(files),
            "command": list(command),
            "isolated": self.isolated,
            "limits": self._limits(limits),
        }
        start = time.monotonic()
        out, err, status = self._supervise(job, limits)
        return self._parse(out, err, status, time.monotonic() - start)

    @staticmethod
    def encode(job: dict[str, Any], workdir: str, clean: Sequence[str] = ()) -> bytes:
        """The supervisor's stdin for `job` run in `workdir`, after emptying the `clean` dirs."""
        payload = json.dumps({**job, "workdir": workdir, "clean": list(clean)}).encode()
        return str(len(payload)).encode() + b"\n" + payload

    def _limits(self, limits: Limits) -> dict[str, Any]:
        return {
            "timeout": limits.timeout,
            "memory_mb": limits.memory_mb,
            "nproc": limits.pids,
            "output_bytes": limits.output_bytes,
            "file_mb": limits.file_mb,
        }

    def supervisor_argv(self, python: str = "python3") -> list[str]:
        """Start the supervisor; give it `SUPERVISOR_ENV` (no -I/-E: PYTHONHASHSEED must apply)."""
        return [python, "-S", "-s", "-P", "-c", supervisor_source()]

    @abstractmethod
    def _supervise(self, job: dict[str, Any], limits: Limits) -> tuple[bytes, bytes, int | None]:
        """Start the supervisor, send it ``encode(job, workdir)``, return (stdout, stderr, status).

        Must give up (and kill the sandbox) after ``limits.timeout + GRACE_SECONDS``.
        """

    def _parse(self, out: bytes, err: bytes, status: int | None, wall: float) -> ExecResult:
        at = out.rfind(_MARK)
        r: dict[str, Any] = {}
        if at >= 0:
            try:
                r = json.loads(out[at + len(_MARK) :].split(b"\n", 1)[0])
            except ValueError:
                r = {}
        if not isinstance(r, dict) or not isinstance(r.get("exit_code"), int):
            # No exit status of the command's own: a typed verdict all the same, never None.
            if status is None:
                why, code = "the sandbox did not answer in time and was killed", -9
            else:
                detail = r.get("error") if isinstance(r, dict) and r.get("error") else ""
                why = detail or (
                    f"the sandbox's supervisor ended without a result (status {status}); "
                    "the sandboxed code may have killed it"
                )
                code = status if status != 0 else -9
            tail = err.decode("utf-8", "replace")[-500:]
            return ExecResult(code, "", tail, status is None, False, wall, backend=self.name, error=why)
        return ExecResult(
            exit_code=r["exit_code"],
            stdout=base64.b64decode(r.get("stdout", "")).decode("utf-8", "replace"),
            stderr=base64.b64decode(r.get("stderr", "")).decode("utf-8", "replace"),
            timed_out=bool(r.get("timed_out")),
            oom=bool(r.get("oom")),
            duration=float(r.get("duration", wall)),
            output_truncated=bool(r.get("output_truncated")),
            stragglers=int(r.get("stragglers", 0)),
            backend=self.name,
            error=r.get("error", ""),
        )

    def close(self) -> None:  # noqa: B027 - a no-op unless the backend holds resources
        """Release held resources (warm containers). Idempotent."""

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
