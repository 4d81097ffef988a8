"""`SplitInfoEnv`: a PettingZoo parallel environment over a `TaskFamily`.

One step is one round. In every step each live agent may send one `Message`
and/or submit an answer. Messages are delivered into their recipients'
observation returned by the same step (the agents' *next* observation).
Messages may be sent in rounds ``1..budget.max_rounds``; one more, answer-only,
step follows. The episode terminates when every answerer has answered (shared
reward = the verifier's score) and is truncated when the last step passes
without an answer (reward 0).

Errors vs violations. Structural mistakes in the caller's code raise a typed
error and leave the episode untouched: stepping before `reset` or after the end
(`EpisodeOverError`), an unknown agent (`UnknownAgentError`), an agent that is
no longer live (`FinishedAgentError`), an action that is not a dict with keys
``message``/``answer`` or whose fields have the wrong type (`ActionError`,
`ActionTypeError`), a message whose sender is not the acting agent or whose
recipients are unknown. Choices an agent makes that break the rules of the game
are *violations*: the message or answer is dropped (an over-long answer is scored
as wrong), the step proceeds, and a `Violation` is listed in that agent's
``infos[agent]["violations"]`` and in `SplitInfoEnv.violations`:
``message_over_budget``, ``episode_budget_exceeded``, ``rounds_exhausted``,
``not_an_answerer``, ``already_answered``, ``answer_too_long``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gymnasium import spaces
from pettingzoo import ParallelEnv

from lpca_envs.errors import (
    ActionError,
    ActionTypeError,
    EpisodeOverError,
    FinishedAgentError,
    TaskError,
    UnknownAgentError,
)
from lpca_envs.messages import Budget, Message
from lpca_envs.spaces import MessageSpace, text_space
from lpca_envs.task import Task, TaskFamily, Verdict

_ACTION_KEYS = frozenset(("message", "answer"))


@dataclass(frozen=True, slots=True)
class Violation:
    """A rule an agent broke in one step; the offending message/answer was dropped."""

    agent: str
    round: int
    kind: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"agent": self.agent, "round": self.round, "kind": self.kind, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message as delivered, with the round it crossed in."""

    round: int
    message: Message


class SplitInfoEnv(ParallelEnv):
    """Split-information episodes of one task family at one level, under one `Budget`."""

    metadata = {
        "name": "lpca_split_info_v0",
        "render_modes": ["ansi", "human"],
        "is_parallelizable": True,
    }

    def __init__(
        self,
        family: TaskFamily,
        level: int = 0,
        budget: Budget | None = None,
        *,
        max_view_chars: int = 8192,
        max_answer_chars: int = 1024,
        render_mode: str | None = None,
    ) -> None:
        if not isinstance(family, TaskFamily):
            raise TaskError(f"family must be a TaskFamily instance, got {type(family).__name__}")
        self.family = family
        self.level = family.check_level(level)
        if budget is None:
            budget = family.default_budget(self.level)
        elif not isinstance(budget, Budget):
            raise TaskError(f"budget must be an lpca_envs.Budget, got {type(budget).__name__}")
        self.budget = budget
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise TaskError(
                f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}"
            )
        self.render_mode = render_mode
        self.max_answer_chars = max_answer_chars
        self.possible_agents = list(family.agents)
        self._agent_set = frozenset(self.possible_agents)
        self.agents: list[str] = []
        n_steps = budget.max_rounds + 1
        self._obs_spaces = {
            a: spaces.Dict(
                {
                    "view": text_space(max_view_chars),
                    "inbox": spaces.Sequence(
                        MessageSpace(
                            [b for b in self.possible_agents if b != a],
                            [a],
                            budget.max_bits_per_message,
                        )
                    ),
                    "round": spaces.Discrete(n_steps + 1),
                }
            )
            for a in self.possible_agents
        }
        self._act_spaces = {
            a: spaces.Dict(
                {
                    "message": MessageSpace([a], self.possible_agents, budget.max_bits_per_message),
                    "answer": text_space(max_answer_chars),
                }
            )
            for a in self.possible_agents
        }
        self._rng = random.Random()
        self.task: Task | None = None
        self.transcript: list[Delivery] = []
        self.violations: list[Violation] = []
        self.verdict: Verdict | None = None
        self.round = 0
        self._bits = 0

    # -- spaces (cached: the same object every call) ------------------------------
    def observation_space(self, agent: str) -> spaces.Space:
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        return self._act_spaces[agent]

    # -- episode ----------------------------------------------------------------------
    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        if seed is not None:
            self._rng.seed(seed)
            for a in self.possible_agents:  # seed the spaces too, for reproducible sampling
                self._act_spaces[a].seed(seed)
        task = options.get("task") if options else None
        if task is None:
            task = self.family.sample(self._rng, self.level)
        elif not isinstance(task, Task) or set(task.views) != self._agent_set:
            raise TaskError(
                f"options['task'] must be a Task with views for {self.possible_agents}, got {task!r}"
            )
        self.task = task
        self.agents = list(self.possible_agents)
        self.round = 0
        self.transcript = []
        self.violations = []
        self.verdict = None
        self._bits = 0
        self._sent = dict.fromkeys(self.possible_agents, 0)
        self._recv = dict.fromkeys(self.possible_agents, 0)
        self._answers: dict[str, Verdict] = {}
        views = task.views
        obs = {a: {"view": views[a], "inbox": (), "round": 0} for a in self.agents}
        infos = {a: self._info(a, ()) for a in self.agents}
        return obs, infos

    def step(self, actions: Mapping[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        if self.task is None:
            raise EpisodeOverError("step() called before reset()")
        if not self.agents:
            raise EpisodeOverError("step() called after the episode ended; call reset()")
        if type(actions) is not dict and not isinstance(actions, Mapping):
            raise ActionTypeError(
                f"actions must be a dict mapping agent names to actions, got {type(actions).__name__}"
            )
        parsed = [self._parse(agent, act) for agent, act in actions.items()]

        self.round = r = self.round + 1
        budget = self.budget
        cap, ep_cap = budget.max_bits_per_message, budget.max_bits_per_episode
        inbox: dict[str, list[Message]] = {}
        step_violations: dict[str, list[Violation]] = {}

        def violate(agent: str, kind: str, detail: str) -> None:
            v = Violation(agent, r, kind, detail)
            step_violations.setdefault(agent, []).append(v)
            self.violations.append(v)

        task = self.task
        answers = []
        for agent, msg, answer in parsed:
            if answer is not None:
                answers.append((agent, answer))
            if msg is None:
                continue
            if r > budget.max_rounds:
                violate(
                    agent,
                    "rounds_exhausted",
                    f"messages allowed in rounds 1..{budget.max_rounds}; this is step {r}",
                )
            elif cap is not None and msg.bits > cap:
                violate(
                    agent,
                    "message_over_budget",
                    f"message of {msg.bits} bits exceeds the {cap}-bit cap",
                )
            elif ep_cap is not None and self._bits + msg.bits > ep_cap:
                violate(
                    agent,
                    "episode_budget_exceeded",
                    f"message of {msg.bits} bits exceeds the {ep_cap - self._bits} bits left this episode",
                )
            else:
                self._bits += msg.bits
                self._sent[agent] += msg.bits
                for rec in msg.recipients:
                    inbox.setdefault(rec, []).append(msg)
                    self._recv[rec] += msg.bits
                self.transcript.append(Delivery(r, msg))

        for agent, answer in answers:
            if agent not in task.answerers:
                violate(agent, "not_an_answerer", f"only {list(task.answerers)} answer this task")
            elif agent in self._answers:
                violate(agent, "already_answered", "an answer was already submitted")
            elif len(answer) > self.max_answer_chars:
                violate(
                    agent, "answer_too_long", f"{len(answer)} > {self.max_answer_chars} characters"
                )
                self._answers[agent] = Verdict(False, 0.0, "answer too long")
            else:
                self._answers[agent] = task.check(answer)

        terminal = len(self._answers) == len(task.answerers)
        truncated = not terminal and r > budget.max_rounds
        reward = 0.0
        if terminal:
            self.verdict = _combine(self._answers, task.answerers)
            reward = self.verdict.score
        agents = self.agents
        views = task.views
        obs = {a: {"view": views[a], "inbox": tuple(inbox.get(a, ())), "round": r} for a in agents}
        rewards = dict.fromkeys(agents, reward)
        terms = dict.fromkeys(agents, terminal)
        truncs = dict.fromkeys(agents, truncated)
        infos = {a: self._info(a, tuple(step_violations.get(a, ()))) for a in agents}
        if terminal or truncated:
            self.agents = []
        if self.render_mode == "human":
            print(self.render())
        return obs, rewards, terms, truncs, infos

    # -- helpers ----------------------------------------------------------------------
    def _parse(self, agent: Any, act: Any) -> tuple[str, Message | None, str | None]:
        if agent not in self._agent_set:
            raise UnknownAgentError(
                f"unknown agent {agent!r}; this env's agents are {self.possible_agents}"
            )
        if agent not in self.agents:
            raise FinishedAgentError(f"agent {agent!r} is no longer live in this episode")
        if act is None:
            return agent, None, None
        if type(act) is not dict and not isinstance(act, Mapping):
            raise ActionTypeError(
                f"action for {agent!r} must be a dict with keys 'message' and/or 'answer', "
                f"got {type(act).__name__}"
            )
        if len(act) > 2 or not _ACTION_KEYS.issuperset(act):
            raise ActionError(
                f"action for {agent!r} has unknown key(s) {sorted(map(str, set(act) - _ACTION_KEYS))}; "
                "expected 'message' and/or 'answer'"
            )
        msg = act.get("message")
        if msg is not None:
            if type(msg) is not Message and not isinstance(msg, Message):
                raise ActionTypeError(
                    f"action['message'] for {agent!r} must be an lpca_envs.Message or None, "
                    f"got {type(msg).__name__} (wrap bytes as Message(sender, recipients, payload))"
                )
            if msg.sender != agent:
                raise ActionError(
                    f"agent {agent!r} cannot send a message with sender {msg.sender!r}"
                )
            for rec in msg.recipients:
                if rec not in self._agent_set:
                    raise UnknownAgentError(
                        f"message recipient {rec!r} is unknown; this env's agents are {self.possible_agents}"
                    )
                if rec == agent:
                    raise ActionError(f"agent {agent!r} cannot send a message to itself")
        answer = act.get("answer")
        if answer is not None:
            if not isinstance(answer, str):
                raise ActionTypeError(
                    f"action['answer'] for {agent!r} must be a str or None, got {type(answer).__name__}"
                )
            if not answer:
                answer = None
        return agent, msg, answer

    @property
    def episode_bits(self) -> int:
        """Bits delivered so far in this episode (all agents)."""
        return self._bits

    def _info(self, agent: str, violations: tuple[Violation, ...]) -> dict[str, Any]:
        task = self.task
        assert task is not None
        ep_cap = self.budget.max_bits_per_episode
        left = self.budget.max_rounds - self.round
        info: dict[str, Any] = {
            "round": self.round,
            "rounds_left": left if left > 0 else 0,
            "bits_sent": self._sent[agent],
            "bits_received": self._recv[agent],
            "episode_bits": self._bits,
            "budget_left_bits": None if ep_cap is None else ep_cap - self._bits,
            "info_bits": task.info_bits,
            "task_id": task.task_id,
            "must_answer": agent in task.answerers and agent not in self._answers,
            "violations": violations,
        }
        if self.verdict is not None:
            info["verdict"] = self.verdict
        return info

    def render(self) -> str | None:
        if self.task is None:
            return None
        lines = [f"[{self.task.task_id}] round {self.round}"]
        for d in self.transcript:
            m = d.message
            body = m.as_text() if m.kind == "text" else f"<{m.kind}: {m.bits} bits>"
            lines.append(f"  r{d.round} {m.sender} -> {','.join(m.recipients)}: {body}")
        if self.verdict is not None:
            lines.append(f"  verdict: {self.verdict.success} ({self.verdict.detail})")
        return "\n".join(lines)

    def close(self) -> None:
        pass


def _combine(answers: Mapping[str, Verdict], answerers: tuple[str, ...]) -> Verdict:
    if len(answerers) == 1:
        return answers[answerers[0]]
    verdicts = [answers[a] for a in answerers]
    return Verdict(
        all(v.success for v in verdicts),
        sum(v.score for v in verdicts) / len(verdicts),
        "; ".join(f"{a}: {answers[a].detail}" for a in answerers),
    )
