"""Sweep configs: grid expansion, and every bad input is a typed error naming the bad key."""

import json
import re
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lpca_envs.errors import LPCAError
from lpca_protocols.cli import app
from lpca_protocols.sweep import SweepConfigError, expand, load_config, parse_config
from lpca_protocols.sweep.config import SweepError

BASE = {
    "models": ["tiny-random-llama"],
    "envs": [{"id": "lpca/SecretRelay-v0", "levels": [0, 1]}, {"id": "lpca/KVLookup-v0"}],
    "channels": [
        {"name": "none", "budgets": ["unlimited"]},
        {"name": "text-budget"},
        {"name": "text", "options": {"forward_view": True}, "vary": {"max_new_tokens": [8, 16]}},
    ],
    "budgets": [64, 128, 256],
    "seeds": [0, 100],
    "episodes": 10,
    "scripted": ["silent", "skyline"],
}


def cfg(**over):
    return parse_config(BASE | over)


def test_grid_expands_every_combination():
    cells = expand(cfg())
    env_levels = 3  # SecretRelay L0, L1, KVLookup L0
    per_model = env_levels * (1 + 3 + 2 * 3) * 2  # channels x budgets (x vary), x 2 seed blocks
    scripted = env_levels * 2 * 2
    assert len(cells) == per_model + scripted
    assert len({c.key for c in cells}) == len(cells)  # keyed by resolved config: all distinct
    assert [c.scripted for c in cells[:scripted]] == ["silent"] * 2 + ["skyline"] * 2 + ["silent"] * 2 + [
        "skyline"
    ] * 2 + ["silent"] * 2 + ["skyline"] * 2
    text = [c for c in cells if c.run.channel == "text"]
    assert {c.run.channel_options["max_new_tokens"] for c in text} == {8, 16}
    assert all(c.run.channel_options["forward_view"] is True for c in text)
    assert {c.run.budget_bits_per_message for c in cells if c.run.channel == "none"} == {None}
    assert {c.run.budget_bits_per_message for c in cells if c.run.channel == "text-budget"} == {64, 128, 256}
    assert {c.run.seed for c in cells} == {0, 100}
    assert all(c.run.episodes == 10 and c.run.model in ("tiny-random-llama", "scripted") for c in cells)
    # the same cell in another sweep is the same key (hash of its resolved config)
    assert [c.key for c in expand(cfg())] == [c.key for c in cells]


def test_control_options_are_grid_entries():
    cells = expand(
        cfg(
            channels=[{"name": "text", "options": {"forward_view": True}, "vary": {"ask": [False, True]}}],
            scripted=[],
        )
    )
    assert sorted({c.run.channel_options["ask"] for c in cells}) == [False, True]


def test_channel_cells_restrict_where_a_channel_runs():
    cells = expand(
        cfg(
            channels=[
                {"name": "none", "budgets": ["unlimited"]},
                {"name": "text", "budgets": ["unlimited"], "cells": ["lpca/SecretRelay-v0"]},
                {
                    "name": "text-budget",
                    "budgets": [64],
                    "cells": ["lpca/SecretRelay-v0@1", "lpca/KVLookup-v0@0"],
                },
            ],
            scripted=[],
            seeds=[0],
        )
    )
    where = {(c.run.channel, c.run.env_id.split("/")[1], c.run.level) for c in cells}
    assert where == {
        ("none", "SecretRelay-v0", 0),
        ("none", "SecretRelay-v0", 1),
        ("none", "KVLookup-v0", 0),
        ("text", "SecretRelay-v0", 0),
        ("text", "SecretRelay-v0", 1),
        ("text-budget", "SecretRelay-v0", 1),
        ("text-budget", "KVLookup-v0", 0),
    }
    assert len(cells) == len(where)


@pytest.mark.parametrize(
    "over,match",
    [
        ({"chanels": []}, r"chanels: unknown key; allowed keys here: name, out, envs, channels"),
        (
            {"channels": [{"name": "none", "optionz": {}}]},
            r"channels\[0\]\.optionz: unknown key.*options, vary",
        ),
        ({"envs": [{"id": "lpca/KVLookup-v0", "level": [0]}]}, r"envs\[0\]\.level: unknown key.*levels"),
        ({"budgets": [64, -1]}, r"budgets\[1\]: a budget is bits per message \(an int >= 0\) or 'unlimited'"),
        ({"budgets": ["inf"]}, r"budgets\[0\].*got 'inf'"),
        ({"budgets": [64, 64]}, r"budgets: budgets repeat a value"),
        ({"episodes": 0}, r"episodes: Input should be greater than or equal to 1"),
        ({"episodes": "ten"}, r"episodes: Input should be a valid integer"),
        ({"backend": "jax"}, r"backend: Input should be 'torch' or 'mlx'"),
        ({"scripted": ["perfect"]}, r"scripted\[0\]: Input should be 'silent', 'oracle' or 'skyline'"),
        ({"seeds": [0, 5]}, r"seeds: blocks starting at 0 and 5 overlap"),
        ({"envs": []}, r"envs: List should have at least 1 item"),
        ({"channels": [], "scripted": []}, r"nothing to run"),
        ({"channels": [{"name": "text", "vary": {"ask": []}}]}, r"vary.ask has no values"),
        ({"channels": [{"name": "none", "cells": ["lpca/KVLookup-v0@one"]}]}, r"cells.*'env_id@level'"),
        ({"channels": [{"name": "none", "cells": []}]}, r"channels\[0\]\.cells: List should have at least 1"),
    ],
)
def test_bad_configs_name_the_key(over, match):
    with pytest.raises(SweepConfigError, match=match):
        cfg(**over)


@pytest.mark.parametrize(
    "over,match",
    [
        ({"envs": [{"id": "lpca/Nope-v0"}]}, r"envs\[0\]\.id: unknown env id 'lpca/Nope-v0'; known ids: "),
        (
            {"envs": [{"id": "lpca/KVLookup-v0", "levels": [7]}]},
            r"envs\[0\]\.levels: .* has levels \[0, 1, 2\]",
        ),
        ({"models": ["gpt9"]}, r"models\[0\]: unknown model 'gpt9': not a zoo id .*smollm2-135m"),
        ({"channels": [{"name": "telepathy"}]}, r"channels\[0\] \(telepathy.*unknown channel 'telepathy'"),
        ({"channels": [{"name": "text", "options": {"colour": 1}}]}, r"channels\[0\] \(text.*known options"),
        (
            {"channels": [{"name": "text", "options": {"ask": True}, "vary": {"ask": [True]}}]},
            r"both in options and vary",
        ),
        ({"channels": [{"name": "none"}, {"name": "none"}]}, r"the grid has the same cell twice"),
        (
            {"channels": [{"name": "none", "cells": ["lpca/KVLookup-v0@2"]}]},
            r"channels\[0\]\.cells: 'lpca/KVLookup-v0@2' is not a task cell of this sweep",
        ),
        ({"channels": [{"name": "none", "cells": ["lpca/Arithmetic-v0"]}]}, r"not a task cell"),
    ],
)
def test_grid_checks_names_against_the_registries(over, match):
    with pytest.raises(SweepConfigError, match=match):
        expand(cfg(**over))


def test_models_may_be_local_paths(tmp_path, monkeypatch):
    """A sweep takes what `--model` takes: a local Hugging Face directory too, checked the same way."""
    monkeypatch.setenv("LPCA_CACHE_DIR", str(tmp_path / "cache"))  # get_spec memos content hashes there
    local = tmp_path / "my-llama"
    local.mkdir()
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_hidden_layers": 2}
    (local / "config.json").write_text(json.dumps(config | {"hidden_size": 8, "vocab_size": 32}))
    (local / "model.safetensors").write_bytes(b"weights")  # get_spec reads no weights
    (local / "tokenizer.json").write_text("{}")
    cells = expand(cfg(models=[str(local)], scripted=[]))
    assert {c.run.model for c in cells} == {str(local)}
    (local / "config.json").write_text(json.dumps(config | {"architectures": ["BertModel"]}))
    with pytest.raises(SweepConfigError, match=r"models\[0\]: .*my-llama holds BertModel, not a causal"):
        expand(cfg(models=[str(local)]))
    with pytest.raises(SweepConfigError, match=r"models\[1\]: .*no config.json"):
        expand(cfg(models=["tiny-random-llama", str(tmp_path)]))


def test_files_toml_yaml_and_errors(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text(
        'models = ["tiny-random-llama"]\nepisodes = 3\n[[envs]]\nid = "lpca/SecretRelay-v0"\n'
        '[[channels]]\nname = "none"\n'
    )
    assert load_config(toml).episodes == 3
    yml = tmp_path / "s.yaml"
    yml.write_text(
        "models: [tiny-random-llama]\nenvs: [{id: lpca/SecretRelay-v0}]\nchannels: [{name: none}]\n"
    )
    assert load_config(yml).envs[0].id == "lpca/SecretRelay-v0"
    bad = tmp_path / "bad.toml"
    bad.write_text("envs = [\n")
    with pytest.raises(SweepConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(SweepConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "s.json").write_text("{}")
    with pytest.raises(SweepConfigError, match=r"expected a \.toml, \.yaml or \.yml file"):
        load_config(tmp_path / "s.json")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(SweepConfigError, match="expected a table of keys"):
        load_config(tmp_path / "list.yaml")
    assert issubclass(SweepConfigError, SweepError) and issubclass(SweepError, LPCAError)


def _flat(text: str) -> str:
    """CLI output with rich's line wrapping undone (the wrap width depends on the terminal)."""
    return " ".join(text.split())


def test_cli_sweep_rejects_bad_input(tmp_path):
    r = CliRunner()
    bad = tmp_path / "bad.toml"
    bad.write_text('episodez = 3\n[[envs]]\nid = "lpca/SecretRelay-v0"\n[[channels]]\nname = "none"\n')
    res = r.invoke(app, ["sweep", str(bad)], env={"COLUMNS": "200"})
    assert res.exit_code == 2 and "episodez: unknown key" in _flat(res.output)
    res = r.invoke(app, ["sweep", str(bad), "--executor", "slurm"])
    assert res.exit_code == 2 and "local or ray" in _flat(res.output)
    res = r.invoke(app, ["sweep", str(bad), "--workers", "0"])
    assert res.exit_code == 2
    res = r.invoke(app, ["leaderboard", str(tmp_path / "nowhere")], env={"COLUMNS": "200"})
    assert res.exit_code == 2 and "is not a sweep directory" in _flat(res.output)
    good = tmp_path / "good.toml"
    good.write_text(
        'models = ["tiny-random-llama"]\nbudgets = [64, 128]\n[[envs]]\nid = "lpca/SecretRelay-v0"\n'
        '[[channels]]\nname = "text-budget"\n'
    )
    res = r.invoke(app, ["sweep", str(good), "--dry-run"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "2 cells, 40 episodes" in _flat(res.output)


def test_shipped_configs_expand():
    root = Path(__file__).parents[1]
    board = expand(load_config(root / "benchmarks" / "leaderboard" / "leaderboard.toml"))
    # 4 task cells x 3 scripted; SecretRelay's 2 levels and PinRelay's level 0 x (P0 + P1 + P5 +
    # (P2, P3, P4) x 3 budgets + the model skyline, 4 latent channels x 4 controls + cipher at
    # temperature 1); KVLookup: P0, P1, P2 x 3 budgets, P5, the model skyline; 5 learned codecs x 4
    # controls, each on its own SecretRelay level
    assert len(board) == 4 * 3 + 3 * (13 + 17) + 7 + 5 * 4
    learned = [c for c in board if c.run.channel.startswith("latent-")]
    for c in learned:  # the committed checkpoints exist where the config says (run from the repo root)
        assert (root / c.run.channel_options["checkpoint"] / "codec.safetensors").is_file()
    latent = {c.run.env_id for c in board if "control" in c.run.channel_options}
    assert latent == {"lpca/SecretRelay-v0", "lpca/PinRelay-v0"}
    assert {c.run.model for c in board} == {"smollm2-135m", "scripted"}
    (block,) = re.findall(r"```toml\n(.*?)```", (root / "README.md").read_text(), re.S)
    assert len(expand(parse_config(tomllib.loads(block)))) == 2 * 3 + 2 * (3 + 1)
