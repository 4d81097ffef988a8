"""Executors: run a list of (cell, run directory) on local worker processes or on a Ray cluster.

Both hand each cell to a `CellWorker` that keeps its model loaded, both call
``on_done(cell, summary, error)`` as cells finish and ``tick()`` about twice a
second (the driver polls the episode logs for progress then). A cell that raises
is reported and the sweep goes on; a worker that dies (killed, out of memory)
stops the sweep: rerunning the same command resumes it.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from lpca_protocols.sweep.config import SweepError, WorkerDiedError
from lpca_protocols.sweep.grid import Cell
from lpca_protocols.sweep.worker import CellWorker

OnDone = Callable[[Cell, dict[str, Any] | None, str | None], None]
Tasks = list[tuple[Cell, Path]]
EXECUTORS = ("local", "ray")
_DIED = "a worker process died (killed or out of memory); rerun the same command to resume the sweep"

_worker: CellWorker | None = None  # the CellWorker of a local worker process


def _init_worker(threads: int | None) -> None:
    global _worker
    _watch_parent(os.getppid())
    _worker = CellWorker(threads)


def _watch_parent(parent: int, every: float = 0.5) -> None:
    """Exit this worker when its driver is gone (killed by a signal, even SIGKILL): an orphaned
    worker would go on running a cell nobody collects, competing with a restarted sweep."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(3)  # the episode log is append-only: at most the batch in flight is lost

    threading.Thread(target=watch, name="lpca-parent-watch", daemon=True).start()


def _run_cell(cell: Cell, run_dir: str) -> dict[str, Any]:
    assert _worker is not None
    return _worker.run(cell, run_dir)


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def run_local(
    tasks: Tasks, workers: int, threads: int | None, on_done: OnDone, tick: Callable[[], None]
) -> None:
    """A pool of `workers` spawned processes; cells are queued in grid order (grouped by model)."""
    ctx = mp.get_context("spawn")  # never fork a process that may hold torch threads
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(threads,))
    try:
        futures = {pool.submit(_run_cell, cell, str(d)): cell for cell, d in tasks}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for f in done:
                try:
                    on_done(futures[f], f.result(), None)
                except BrokenProcessPool:
                    for p in pending:
                        p.cancel()
                    raise WorkerDiedError(_DIED) from None
                except Exception as e:  # the cell failed; the others go on
                    on_done(futures[f], None, _error(e))
            tick()
    except BaseException:
        # Ctrl-C or an error: stop the workers now rather than wait for their cells to finish
        # (a rerun resumes the cells they were in).
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def run_ray(
    tasks: Tasks,
    workers: int,
    threads: int | None,
    on_done: OnDone,
    tick: Callable[[], None],
    address: str | None = None,
    gpus_per_worker: float = 0.0,
) -> None:
    """`workers` Ray actors per (model, backend) group, one group after another.

    Each actor loads the group's model once and serves its cells. Actors write the
    cells' run directories themselves: on a multi-node cluster the sweep directory
    must be on a filesystem every node mounts at the same path.
    """
    try:
        import ray
        from ray.exceptions import RayActorError, RayTaskError
    except ImportError:
        raise SweepError(
            "--executor ray needs Ray: pip install -c constraints.txt 'lpca[ray]' (or 'ray[default]')"
        ) from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    Actor = ray.remote(num_cpus=1, num_gpus=gpus_per_worker)(CellWorker)
    groups: dict[tuple[str, str], Tasks] = {}
    for cell, d in tasks:
        groups.setdefault(cell.group, []).append((cell, d))
    try:
        for items in groups.values():
            _run_group(ray, Actor, items, workers, threads, on_done, tick, RayActorError, RayTaskError)
    finally:
        if started:
            ray.shutdown()


def _run_group(
    ray: Any,
    Actor: Any,
    items: Tasks,
    workers: int,
    threads: int | None,
    on_done: OnDone,
    tick: Callable[[], None],
    RayActorError: type[Exception],
    RayTaskError: Any,
) -> None:
    """One model's cells on up to `workers` fresh actors; each actor takes the next cell when free."""
    queue = list(items)
    actors = [Actor.remote(threads) for _ in range(min(workers, len(queue)))]
    inflight: dict[Any, tuple[Any, Cell]] = {}

    def submit(actor: Any) -> None:
        if queue:
            cell, d = queue.pop(0)
            inflight[actor.run.remote(cell, str(d))] = (actor, cell)

    for a in actors:
        submit(a)
    try:
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
            for ref in ready:
                actor, cell = inflight.pop(ref)
                try:
                    on_done(cell, ray.get(ref), None)
                except RayActorError:
                    raise WorkerDiedError(_DIED) from None
                except RayTaskError as e:
                    on_done(cell, None, _error(e.cause) if e.cause is not None else str(e))
                submit(actor)
            tick()
    finally:
        for a in actors:
            ray.kill(a)
