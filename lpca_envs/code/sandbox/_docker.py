"""`DockerSandbox`: locked-down containers through the Docker SDK, with a small warm pool.

Every container: the registry-free image of `image.py`, ``network_mode="none"``,
read-only root, ``mem_limit`` (no swap), ``pids_limit``, ``nano_cpus``,
``cap_drop=["ALL"]``, ``no-new-privileges``, uid/gid 65534, a private IPC namespace,
no log driver. The writable places are size-capped tmpfs that together hold
`Limits.disk_mb`: ``/work`` (half), ``/tmp`` and ``/dev/shm`` (a quarter each); and
``/dev/mqueue`` (POSIX message queues, bounded by RLIMIT_MSGQUEUE).

PID 1 of every container is the supervisor in serving mode, attached to the host
through the container's stdin/stdout: a run is one job written to it and one
answer read back (no ``docker exec`` per run). The kernel shields a namespace's
init from signals sent inside the namespace, so the sandboxed code cannot kill
it; before each run it kills every other process in the container, empties every
writable place (``WRITABLE``) and removes the IPC namespace's System V objects, and
checks that nothing is left: each run starts from the same clean state. A container
that cannot be cleaned is replaced and the run goes to a fresh one. Containers are
reused up to ``max_uses`` runs and replaced after any run that did not answer
cleanly (the watchdog fired).
``pool_size=0`` gives a cold container per run. The image is built on first use
(with a progress message) if `.ci/setup_sandbox.sh` has not built it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import socket
import struct
import sys
import tempfile
import threading
import time
import uuid
import weakref
from typing import Any

from lpca_envs.code.sandbox import image as _image
from lpca_envs.code.sandbox._api import (
    _MARK,
    GRACE_SECONDS,
    SUPERVISOR_ENV,
    Limits,
    Sandbox,
    SandboxError,
    SandboxUnavailable,
)

LABEL = "lpca.sandbox"
_SWEPT: list[int] = []
_USER = "65534:65534"
_TMPFS = "rw,noexec,nosuid,nodev,size={},uid=65534,gid=65534"
#: Every place a run can write in a container; each is emptied (and checked empty) before a run.
WRITABLE = ("/work", "/tmp", "/dev/shm", "/dev/mqueue")


def _client() -> Any:
    import docker  # lazy: importing lpca_envs.code must stay cheap

    return docker.from_env(timeout=60)


def ensure_image(client: Any, log: Any = None) -> str:
    """The image's tag, building it (once per machine, under a file lock) if missing."""
    import docker.errors

    tag = _image.image_tag()
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    why = _image.build_missing_reason()
    if why:
        raise SandboxUnavailable(f"docker sandbox image {tag} is missing and cannot be built: {why}")
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    with _image.build_lock():
        try:
            client.images.get(tag)
            return tag
        except docker.errors.ImageNotFound:
            pass
        log(f"lpca: building docker sandbox image {tag} (debootstrap, about a minute, once per machine)")
        with tempfile.TemporaryDirectory(prefix="lpca-image-") as d:
            tar = os.path.join(d, "rootfs.tar")
            try:
                _image.build_rootfs_tar(tar, log)
            except RuntimeError as e:
                raise SandboxUnavailable(f"building the docker sandbox image failed: {e}") from None
            repo, _, version = tag.partition(":")
            client.api.import_image_from_file(
                tar, repository=repo, tag=version, changes=_image.RECIPE["changes"]
            )
        log(f"lpca: built {tag}")
    return tag


class _Box:
    """One container and the attached stream to its serving supervisor."""

    def __init__(self, container: Any, sock: Any) -> None:
        self.container, self.sock = container, sock
        self.raw = getattr(sock, "_sock", sock)
        self.key: tuple = ()
        self.uses = 0
        self.pending = bytearray()

    def request(self, payload: bytes, deadline: float) -> tuple[bytes, bytes, int | None]:
        """Send one job, read frames until the answer line. Status 0: answered; None: timed out."""
        streams = {1: bytearray(), 2: bytearray()}
        try:
            self.raw.sendall(payload)
        except OSError as e:
            return b"", str(e).encode(), -1
        buf = self.pending
        while True:
            while len(buf) >= 8:  # docker's multiplexed frames: type, 3 pad bytes, big-endian size
                kind, size = buf[0], struct.unpack(">I", buf[4:8])[0]
                if len(buf) < 8 + size:
                    break
                if len(streams.get(kind, b"")) < (4 << 20):
                    streams.setdefault(kind, bytearray()).extend(buf[8 : 8 + size])
                del buf[: 8 + size]
            if streams[1].endswith(b"\n") and _MARK in streams[1]:
                return bytes(streams[1]), bytes(streams[2]), 0
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.raw], [], [], left)[0]:
                return bytes(streams[1]), bytes(streams[2]), None
            try:
                chunk = self.raw.recv(1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                return bytes(streams[1]), bytes(streams[2]), -1
            buf += chunk

    def close(self) -> None:
        for s in (self.sock, self.raw):
            with contextlib.suppress(Exception):
                s.close()


class DockerSandbox(Sandbox):
    name = "docker"
    isolated = True

    def __init__(self, pool_size: int = 2, max_uses: int = 500, client: Any = None) -> None:
        if pool_size < 0:
            raise SandboxError(f"pool_size must be >= 0, got {pool_size}")
        self.pool_size = pool_size
        self.max_uses = max_uses
        self._client = client or _client()
        self._image: str | None = None
        self._lock = threading.Condition()
        self._idle: list[_Box] = []
        self._live = 0
        self._closed = False
        self._owner = f"{socket.gethostname()}:{os.getpid()}"
        self._instance = uuid.uuid4().hex
        if not _SWEPT:  # once per process: containers of dead processes on this host
            _SWEPT.append(remove_stale_containers(self._client))
        self._reapers: list[threading.Thread] = []
        atexit.register(_close_ref, weakref.ref(self))

    @classmethod
    def unavailable_reason(cls) -> str | None:
        try:
            import docker
            import docker.errors
        except ImportError:
            return "the Docker SDK is not installed (pip install docker)"
        try:
            client = docker.from_env(timeout=5)
            client.ping()
        except Exception as e:
            return f"no Docker daemon answered ({type(e).__name__}: {str(e)[:160]}); start dockerd"
        try:
            client.images.get(_image.image_tag())
        except docker.errors.ImageNotFound:
            why = _image.build_missing_reason()  # else it is built on first use
            if why:
                return f"the sandbox image {_image.image_tag()} is missing and {why}"
        except Exception as e:
            return f"the Docker daemon did not list images ({type(e).__name__}: {str(e)[:160]})"
        return None

    # -- containers ------------------------------------------------------------------------
    def _key(self, limits: Limits) -> tuple:
        return (limits.memory_mb, limits.pids, limits.cpus, limits.disk_mb)

    def _create(self, key: tuple) -> _Box:
        import docker.types

        if self._image is None:
            self._image = ensure_image(self._client)
        memory_mb, pids, cpus, disk_mb = key
        size = Limits(disk_mb=disk_mb).disk_bytes()
        c = self._client.containers.run(
            self._image, [*self.supervisor_argv(), "--serve"], detach=True, stdin_open=True,
            network_mode="none", read_only=True, shm_size=size["shm"],
            tmpfs={"/work": _TMPFS.format(size["work"]), "/tmp": _TMPFS.format(size["tmp"])},
            mem_limit=f"{memory_mb}m", memswap_limit=f"{memory_mb}m", pids_limit=pids,
            nano_cpus=int(cpus * 1e9), cap_drop=["ALL"], security_opt=["no-new-privileges"],
            user=_USER, working_dir="/work", hostname="sandbox", ipc_mode="private",
            environment=SUPERVISOR_ENV,
            labels={LABEL: "1", f"{LABEL}.owner": self._owner, f"{LABEL}.instance": self._instance},
            log_config=docker.types.LogConfig(type="none"), stop_signal="SIGKILL",
        )  # fmt: skip
        try:
            sock = self._client.api.attach_socket(
                c.id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            )
        except BaseException:
            self._discard(_Box(c, None), wait=True)
            raise
        return _Box(c, sock)

    def _acquire(self, key: tuple) -> _Box:
        with self._lock:
            while True:
                if self._closed:
                    raise SandboxError("DockerSandbox is closed")
                for i, box in enumerate(self._idle):
                    if box.key == key:
                        del self._idle[i]
                        return box
                if self._live < max(self.pool_size, 1):
                    self._live += 1
                    break
                if self._idle:  # full of containers with other limits: replace one
                    self._discard(self._idle.pop(0))
                    self._live += 1
                    break
                self._lock.wait()
        try:
            box = self._create(key)
        except BaseException:
            with self._lock:
                self._live -= 1
                self._lock.notify()
            raise
        box.key = key
        return box

    def _release(self, box: _Box, healthy: bool) -> None:
        box.uses += 1
        with self._lock:
            keep = healthy and not self._closed and self.pool_size > 0 and box.uses < self.max_uses
            if keep:
                self._idle.append(box)
            else:
                self._live -= 1
            self._lock.notify()
        if not keep:
            self._discard(box, wait=self.pool_size == 0 or self._closed)

    def _discard(self, box: _Box, wait: bool = False) -> None:
        def remove() -> None:
            box.close()
            with contextlib.suppress(Exception):
                box.container.remove(force=True)

        if wait:
            remove()
            return
        t = threading.Thread(target=remove, daemon=True)
        t.start()
        self._reapers.append(t)

    def warm_up(self, limits: Limits | None = None) -> None:
        """Start the pool's containers now (each run would otherwise start its own on first use)."""
        key = self._key(limits or Limits())
        boxes = [self._acquire(key) for _ in range(max(self.pool_size, 1))]
        for box in boxes:
            self._release(box, True)

    def _limits(self, limits: Limits) -> dict[str, Any]:
        # No RLIMIT_NPROC: without a user namespace it would count every uid-65534 process on
        # the host (other containers, bwrap sandboxes); the container's pids cgroup is the limit.
        return {**super()._limits(limits), "nproc": None}

    # -- one run ---------------------------------------------------------------------------
    def _supervise(self, job: dict[str, Any], limits: Limits) -> tuple[bytes, bytes, int | None]:
        payload = self.encode({**job, "clean_ipc": True}, "/work", WRITABLE)
        for attempt in (0, 1):
            box = self._acquire(self._key(limits))
            reused = box.uses > 0
            healthy = unclean = False
            try:
                out, err, status = box.request(payload, time.monotonic() + limits.timeout + GRACE_SECONDS)
                unclean = status == 0 and b'"unclean": true' in out
                healthy = status == 0 and not unclean
            finally:
                self._release(box, healthy)
            # A warm container that died while idle (killed from outside) answers nothing at
            # all, and one an earlier run left in a state it cannot clean answers "unclean":
            # run the job once more on a fresh one rather than blame the code.
            if healthy or not reused or (out and not unclean) or attempt:
                return out, err, status
        return out, err, status

    # -- bookkeeping -----------------------------------------------------------------------
    def containers(self) -> list[Any]:
        """Containers this sandbox created that still exist (for tests and cleanup checks)."""
        return self._client.containers.list(all=True, filters={"label": f"{LABEL}.instance={self._instance}"})

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._live -= len(idle)
            self._lock.notify_all()
        for box in idle:
            self._discard(box, wait=True)
        for t in self._reapers:
            t.join(timeout=30)
        self._reapers.clear()

    def __repr__(self) -> str:
        return f"DockerSandbox(pool_size={self.pool_size}, image={self._image!r})"


def remove_stale_containers(client: Any = None) -> int:
    """Remove sandbox containers whose owning process (on this host) is gone; return how many."""
    client = client or _client()
    host = socket.gethostname()
    n = 0
    for c in client.containers.list(all=True, filters={"label": LABEL}):
        owner = c.labels.get(f"{LABEL}.owner", "")
        h, _, pid = owner.rpartition(":")
        if h != host or not pid.isdigit() or _alive(int(pid)):
            continue  # another machine's, or its process still runs
        try:
            c.remove(force=True)
            n += 1
        except Exception:
            pass
    return n


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _close_ref(ref: weakref.ref) -> None:
    sb = ref()
    if sb is not None:
        sb.close()
