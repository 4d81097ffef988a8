"""The README's Python examples run as written, and its environment list is complete."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import lpca_envs

README = (Path(__file__).parents[1] / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "1.0" in out.stdout  # every example ends by printing a successful reward


def test_readme_lists_every_environment():
    for env_id in lpca_envs.list_envs():
        if lpca_envs.get_family(env_id).__module__.startswith("lpca_envs.families"):
            assert f"`{env_id}`" in README
