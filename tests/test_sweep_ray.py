"""The same sweep on a local Ray instance gives the same episodes as on local worker processes."""

import pytest

from lpca_protocols.episode_log import read_episodes
from lpca_protocols.sweep import SweepStore, expand, parse_config, run_sweep

ray = pytest.importorskip("ray", reason="the ray extra is not installed")

CONFIG = {
    "name": "ray",
    "models": ["tiny-random-llama"],
    "envs": [{"id": "lpca/SecretRelay-v0", "levels": [0]}],
    "channels": [
        {"name": "none"},
        {"name": "text", "options": {"forward_view": True}, "budgets": [64, "unlimited"]},
    ],
    "episodes": 4,
    "batch_size": 2,
    "max_new_tokens": 6,
    "scripted": ["skyline"],
}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def strip(records):
    return [{k: v for k, v in r.items() if not k.startswith("time_")} for r in records]


def test_local_and_ray_executors_record_identical_episodes(local_ray, tmp_path):
    cfg = parse_config(CONFIG)
    on_ray = run_sweep(cfg, tmp_path / "ray", executor="ray", workers=2, live=False)
    local = run_sweep(cfg, tmp_path / "local", executor="local", workers=1, live=False)
    assert not on_ray.failed and not local.failed
    cells = expand(cfg)
    assert len(on_ray.finished) == len(local.finished) == len(cells) == 4
    for cell in cells:
        a = read_episodes(SweepStore(tmp_path / "ray").cell_dir(cell) / "episodes.jsonl")
        b = read_episodes(SweepStore(tmp_path / "local").cell_dir(cell) / "episodes.jsonl")
        assert [r["seed"] for r in a] == [0, 1, 2, 3]
        assert strip(a) == strip(b)
    # actors are per model: each one loaded the model once for all the cells it served
    assert {s.get("model_loads", 1) for s in on_ray.finished.values()} == {1}
    # a restarted Ray sweep skips what is done
    again = run_sweep(cfg, tmp_path / "ray", executor="ray", workers=2, live=False)
    assert not again.finished and len(again.skipped) == 4
