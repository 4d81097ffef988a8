"""Your own agents in an LPCA environment, through the plain PettingZoo parallel API.

Nothing here uses LPCA's runner, channels or model backends: the loop below is the
whole protocol. Each step every live agent reads its observation (its private
``view``, the ``inbox`` of messages that arrived, the ``round``) and returns an
action: a `Message` to send and/or an ``answer`` string. The environment costs every
message in bits, delivers it in the recipient's next observation, and scores the
answer with the task's verifier (reward 1.0 for a correct answer).

Two agent pairs are built in:

- the rule agents (default): the sender finds its secrets in its view with a regular
  expression and sends only the words; the receiver answers with what arrived.
- ``--model ID``: one causal language model, through plain transformers ``generate``,
  plays both agents (the zoo's tiny random model by default: it runs anywhere and
  answers at chance; give a local Hugging Face directory for a real model).

    python examples/own_agent/own_agent.py --episodes 8
    python examples/own_agent/own_agent.py --model tiny-random-llama --episodes 2
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import lpca_envs
from lpca_envs import Message

#: A policy maps (agent name, its observation, its info) to an action, or None to pass this step.
Policy = Callable[[str, dict[str, Any], dict[str, Any]], dict[str, Any] | None]


@dataclass
class Config:
    env_id: str = "lpca/SecretRelay-v0"
    """The environment (any id from `lpca envs`; the rule agents know SecretRelay)."""
    level: int = 0
    """Task level: SecretRelay carries 1, 2 or 3 secret words at levels 0, 1, 2."""
    episodes: int = 8
    """Episodes to play, with seeds seed .. seed+episodes-1."""
    seed: int = 0
    """First episode seed: the same seed draws the same task."""
    model: str | None = None
    """None for the rule agents; a zoo id (tiny-random-llama) or a Hugging Face directory for a model."""
    max_new_tokens: int = 16
    """With --model: the longest message or answer the model may generate."""


# --------------------------------------------------------------------------- rule agents

SECRET = re.compile(r"the secret (\w+) is (\w+)")


def rule_policy(agent: str, obs: dict[str, Any], info: dict[str, Any]) -> dict[str, Any] | None:
    """A sends its secret words in the first round; B answers with the words that arrived."""
    if agent == "A" and obs["round"] == 0:
        words = [word for _slot, word in SECRET.findall(obs["view"])]
        return {"message": Message.text("A", "B", " ".join(words))}
    if agent == "B" and info["must_answer"] and (obs["inbox"] or info["rounds_left"] == 0):
        heard = " ".join(m.as_text() for m in obs["inbox"])
        return {"answer": heard or "I was told nothing"}
    return None


# --------------------------------------------------------------------------- a model of your own


def model_policy(model_id: str, max_new_tokens: int) -> Policy:
    """Both agents are one causal LM: A writes a message from its view, B answers from view + inbox."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(model_id)
    if not (path / "config.json").is_file():  # a zoo id: converted into LPCA's cache once
        from lpca_models import zoo

        path = zoo.ensure_cached(model_id)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()

    def generate(prompt: str) -> str:
        if tok.chat_template:
            chat = [{"role": "user", "content": prompt}]
            enc = tok.apply_chat_template(
                chat, add_generation_prompt=True, return_dict=True, return_tensors="pt"
            )
        else:
            enc = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        return tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()

    def policy(agent: str, obs: dict[str, Any], info: dict[str, Any]) -> dict[str, Any] | None:
        if agent == "A" and obs["round"] == 0:
            text = generate(obs["view"] + "\nWrite a short message that tells your partner.")
            return {"message": Message.text("A", "B", text or "(nothing)")}
        if agent == "B" and info["must_answer"] and (obs["inbox"] or info["rounds_left"] == 0):
            heard = "\n".join(m.as_text() for m in obs["inbox"])
            answer = generate(f"{obs['view']}\nYour partner said: {heard}")
            return {"answer": answer or "(nothing)"}
        return None

    return policy


# --------------------------------------------------------------------------- the loop


def play(env: Any, policy: Policy, seed: int) -> tuple[float, dict[str, Any], list[str]]:
    """One episode: (B's reward, B's final info, what crossed, as lines)."""
    obs, infos = env.reset(seed=seed)
    rewards: dict[str, float] = {}
    crossed: list[str] = []
    while env.agents:
        actions = {}
        for agent in env.agents:
            action = policy(agent, obs[agent], infos[agent])
            if action is not None:
                actions[agent] = action
                if "message" in action:
                    m = action["message"]
                    crossed.append(f"{m.sender}->{','.join(m.recipients)} {m.as_text()!r} ({m.bits} bits)")
                if "answer" in action:
                    crossed.append(f"{agent} answers {action['answer']!r}")
        obs, rewards, _terms, _truncs, infos = env.step(actions)
    return rewards.get("B", 0.0), infos["B"], crossed


def main(cfg: Config) -> float:
    env = lpca_envs.make(cfg.env_id, level=cfg.level)
    policy = rule_policy if cfg.model is None else model_policy(cfg.model, cfg.max_new_tokens)
    total = bits = 0.0
    wins = 0
    for seed in range(cfg.seed, cfg.seed + cfg.episodes):
        reward, info, crossed = play(env, policy, seed)
        verdict = info["verdict"]
        total += reward
        bits += info["episode_bits"]
        wins += verdict.success
        print(f"episode {seed}: reward {reward:.1f} ({verdict.detail}); " + "; ".join(crossed))
    n = cfg.episodes
    print(
        f"success {wins}/{n} ({wins / n:.0%}), mean reward {total / n:.2f}, "
        f"{bits / n:.1f} bits/episode (the task needs {info['info_bits']:.1f})"
    )
    return total / n


def parse_args() -> Config:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for f in fields(Config):
        flag = "--" + f.name.replace("_", "-")
        kind = str if f.name in ("env_id", "model") else int
        parser.add_argument(flag, type=kind, default=f.default, help=f"(default: {f.default})")
    return Config(**vars(parser.parse_args()))


if __name__ == "__main__":
    main(parse_args())
