"""examples/own_agent: a user's own agent loop over the PettingZoo API runs and scores."""

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "examples" / "own_agent" / "own_agent.py"


def _run(*args: str) -> str:
    out = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_rule_agents_relay_every_secret():
    out = _run("--episodes", "6", "--level", "1")
    assert "success 6/6 (100%), mean reward 1.00" in out
    assert len(re.findall(r"^episode \d+: reward 1\.0 \(correct\); A->B '\w+ \w+'", out, re.M)) == 6


def test_own_model_plays_through_transformers_generate():
    out = _run("--model", "tiny-random-llama", "--episodes", "1", "--max-new-tokens", "4")
    assert re.search(r"^episode 0: reward [01]\.0 .*A->B .* B answers ", out, re.M), out
    assert re.search(r"^success [01]/1 .*, mean reward [01]\.00, ", out, re.M), out
