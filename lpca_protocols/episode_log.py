"""`episodes.jsonl`: the append-only episode log of a run directory, and its completeness check.

One JSON object per line, one line per finished episode. A line counts only once its
newline is on disk: a batch is appended with one write and an fsync, so `kill -9` at
any moment leaves every earlier line whole and at most one torn last line (no
newline), which `read_episodes(..., repair=True)` truncates away. Any other damage (a
complete line that is not a record, a seed recorded twice) is corruption and raises.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from lpca_envs.errors import LPCAError

#: A field some older logs lack: `read_episodes` does not require it.
_LATER = {"later": True}


@dataclass(frozen=True)
class EpisodeRecord:
    """What one episode produced: the runner builds it, `episodes.jsonl` holds it as one JSON
    object (keys in this order), `read_episodes` checks it. Per-episode times, token counts
    and forward passes are the batch's divided by its episodes."""

    task_id: str
    seed: int
    success: bool
    score: float = field(metadata=_LATER)
    detail: str = field(metadata=_LATER)
    """The verifier's explanation ("no answer" when none came)."""
    answer: str | None = field(metadata=_LATER)
    messages: list[dict[str, Any]] = field(metadata=_LATER)
    """One entry per message sent: round, sender, bits, kind, delivered."""
    bits: int
    """Bits delivered in the episode (what the budget counts)."""
    info_bits: float
    tokens_generated: int
    prompt_tokens: int
    forward_passes: int
    time_sender_s: float
    time_channel_s: float
    time_receiver_s: float
    violations: list[dict[str, Any]] = field(metadata=_LATER)
    diagnostics: dict[str, Any] = field(metadata=_LATER)
    """Channel measurements (symbols sent, payload sensitivity...), not part of the protocol."""

    def as_dict(self) -> dict[str, Any]:
        """The JSON object of this record (the same objects, not copies)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


#: Keys every episode record carries and `read_episodes` checks (the fields not marked `_LATER`).
RECORD_KEYS: tuple[str, ...] = tuple(f.name for f in fields(EpisodeRecord) if not f.metadata.get("later"))


class EpisodeLogError(LPCAError, ValueError):
    """An episode log is corrupt (not a torn last line) or does not match its run."""


def read_episodes(
    path: str | Path, *, repair: bool = False, seeds: Iterable[int] | None = None
) -> list[dict[str, Any]]:
    """The complete records of `path`, in file order.

    A torn last line (no trailing newline: the write in flight when a process was
    killed) is ignored, and with ``repair=True`` cut off the file so that appends
    start on a clean line. With `seeds`, every record's seed must be one of them.
    A missing file reads as no records.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return []
    end = data.rfind(b"\n") + 1  # bytes up to the last complete line
    if end < len(data) and repair:
        with open(p, "r+b") as f:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
    allowed = set(seeds) if seeds is not None else None
    records: list[dict[str, Any]] = []
    seen: set[int] = set()
    for n, line in enumerate(data[:end].split(b"\n")[:-1], start=1):
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise EpisodeLogError(f"{p}: line {n} is not JSON ({e}); the log is corrupt") from None
        if not isinstance(rec, dict):
            raise EpisodeLogError(f"{p}: line {n} is a {type(rec).__name__}, expected a JSON object")
        missing = [k for k in RECORD_KEYS if k not in rec]
        if missing:
            raise EpisodeLogError(f"{p}: line {n} lacks the record key(s) {missing}")
        seed = rec["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise EpisodeLogError(f"{p}: line {n}: seed must be an int, got {seed!r}")
        if seed in seen:
            raise EpisodeLogError(f"{p}: line {n}: seed {seed} is recorded twice")
        if allowed is not None and seed not in allowed:
            raise EpisodeLogError(f"{p}: line {n}: seed {seed} is not one of this run's seeds")
        seen.add(seed)
        records.append(rec)
    return records


def complete_bytes(path: str | Path) -> bytes:
    """The bytes of `path` up to and including its last newline (whole lines only)."""
    data = Path(path).read_bytes()
    return data[: data.rfind(b"\n") + 1]


def append_episodes(path: str | Path, records: list[EpisodeRecord] | list[dict[str, Any]]) -> None:
    """Append `records` with one write, then fsync: whole lines, or a torn last one, never worse."""
    if not records:
        return
    rows = [r.as_dict() if isinstance(r, EpisodeRecord) else r for r in records]
    blob = "".join(json.dumps(r) + "\n" for r in rows).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(blob)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | Path, text: str) -> None:
    """Write `text` to `path` via a temporary file and a rename: readers see the old or the new file."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)
