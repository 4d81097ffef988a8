"""A training run's directory and console: the config claim that keeps two runs apart, the cached
episode datasets it trains and evaluates on, the progress bar.

The checks raise the caller's error type (the trainer's `TrainError`), as `check_fsq_levels` does.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from lpca_protocols.training import dataset as ds
from lpca_protocols.training.config import TrainConfig


def load_datasets(
    cfg: TrainConfig,
    layer: int,
    agent: Any,
    error: type[Exception],
    receiver: Any = None,
    layers: tuple[int, ...] = (),
) -> tuple[Any, Any]:
    """The (train, eval) episode datasets of `cfg`, collected first where missing or unfinished.

    `receiver` is a bridge's receiving agent (another model than the sender `agent`)."""
    root = Path(cfg.data_dir) if cfg.data_dir else Path(cfg.out) / "data"
    out = []
    for seed, n in ((cfg.train_seed, cfg.train_episodes), (cfg.eval_seed, cfg.eval_episodes)):
        spec = ds.DatasetSpec(
            cfg.model,
            cfg.env,
            cfg.level,
            seed,
            n,
            layer,
            cfg.tail,
            cfg.teacher,
            cfg.shard_size,
            receiver=cfg.receiver if receiver is not None else "",
            primer=cfg.primer,
            layers=tuple(layers),
        )
        key = hashlib.sha256(json.dumps(spec.as_dict(), sort_keys=True).encode()).hexdigest()[:12]
        path = root / f"{cfg.env.replace('/', '_')}-L{cfg.level}-{seed}-{n}-{key}"
        ds.collect(spec, path, agent, receiver=receiver)
        data = ds.load(path)
        if data.fingerprint != agent.backend.info.fingerprint:
            raise error(f"dataset {path} was collected with another model")
        if receiver is not None and data.receiver_fingerprint != receiver.backend.info.fingerprint:
            raise error(f"dataset {path} was collected for another receiver model")
        out.append(data)
    return out[0], out[1]


def claim_run_dir(out: Path, cfg: TrainConfig, error: type[Exception]) -> None:
    """Record `cfg` in `out`, or check that `out` already holds this run (a resume), not another."""
    f = out / "config.json"
    want = cfg.model_dump()
    if f.exists():
        have = json.loads(f.read_text())
        # keys added since that run was started take their defaults (no re-validation: a stored
        # dump lists every key, which the validators would read as set by the user)
        _fill(have, json.loads(json.dumps(type(cfg)().model_dump())))
        if have != json.loads(json.dumps(want)):
            diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
            raise error(f"{out} holds another training run (config differs in {diff}); use another --out")
        return
    f.write_text(json.dumps(want, indent=2))


def _fill(have: dict[str, Any], default: dict[str, Any]) -> None:
    for key, value in default.items():
        if key not in have:
            have[key] = value
        elif isinstance(value, dict) and isinstance(have[key], dict):
            _fill(have[key], value)


def progress_bar(enabled: bool, total: int, start: int) -> Any:
    """(rich progress, task) started at step `start` of `total`, or None when not `enabled`."""
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("train codec"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}  {task.fields[ev]}"),
        TimeRemainingColumn(),
    )
    task = bar.add_task("train", total=total, completed=start, loss=math.nan, ev="")
    bar.start()
    return bar, task
