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
from types import MappingProxyType
from typing import Any

from gymnasium import spaces
from pettingzoo import ParallelEnv

from lpca_envs._records import fast_init
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
_NO_VIOLATIONS: Mapping[str, list[Violation]] = MappingProxyType({})


@fast_init
@dataclass(frozen=True, slots=True)
class Violation:
    """A rule an agent broke in one step; the offending message/answer was dropped."""

    agent: str
    round: int
    kind: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"agent": self.agent, "round": self.round, "kind": self.kind, "detail": self.detail}


@fast_init
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
        self.agents = agents = list(self.possible_agents)
        self.round = 0
        self.transcript = []
        self.violations = []
        self.verdict = None
        self._bits = 0
        self._sent = dict.fromkeys(agents, 0)
        self._recv = dict.fromkeys(agents, 0)
        self._answers: dict[str, Verdict] = {}
        views = task.views
        obs = {}
        for a in agents:
            obs[a] = {"view": views[a], "inbox": (), "round": 0}
        infos = self._infos(agents, task, _NO_VIOLATIONS)
        return obs, infos

    def step(self, actions: Mapping[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        task = self.task
        if task is None:
            raise EpisodeOverError("step() called before reset()")
        live = self.agents
        if not live:
            raise EpisodeOverError("step() called after the episode ended; call reset()")
        if type(actions) is not dict and not isinstance(actions, Mapping):
            raise ActionTypeError(
                f"actions must be a dict mapping agent names to actions, got {type(actions).__name__}"
            )
        # Every action is checked before anything changes (`_parse` raises the typed errors).
        # The common actions are checked inline, by the same rules: None from a live agent
        # (carries nothing), and a dict with a valid Message and/or a str answer.
        agent_set = self._agent_set
        messages: list[tuple[str, Message]] = []
        answers: list[tuple[str, str]] = []
        for agent, act in actions.items():
            if agent in agent_set and agent in live:
                if act is None:
                    continue
                if type(act) is dict and len(act) <= 2 and _ACTION_KEYS.issuperset(act):
                    msg = act.get("message")
                    answer = act.get("answer")
                    if (msg is None or (type(msg) is Message and msg.sender == agent)) and (
                        answer is None or type(answer) is str
                    ):
                        if msg is not None:
                            for rec in msg.recipients:
                                if rec not in agent_set or rec == agent:
                                    break
                            else:
                                messages.append((agent, msg))
                                if answer:
                                    answers.append((agent, answer))
                                continue
                        else:
                            if answer:
                                answers.append((agent, answer))
                            continue
            _, msg, answer = self._parse(agent, act)
            if msg is not None:
                messages.append((agent, msg))
            if answer is not None:
                answers.append((agent, answer))

        self.round = r = self.round + 1
        budget = self.budget
        max_rounds = budget.max_rounds
        inbox: dict[str, list[Message]] = {}
        step_violations: dict[str, list[Violation]] = {}
        answered = self._answers
        for agent, msg in messages:  # delivered in the order the actions came
            bits = msg.bits
            cap, ep_cap = budget.max_bits_per_message, budget.max_bits_per_episode
            if r > max_rounds:
                self._violate(
                    step_violations,
                    agent,
                    "rounds_exhausted",
                    f"messages allowed in rounds 1..{max_rounds}; this is step {r}",
                )
            elif cap is not None and bits > cap:
                self._violate(
                    step_violations,
                    agent,
                    "message_over_budget",
                    f"message of {bits} bits exceeds the {cap}-bit cap",
                )
            elif ep_cap is not None and self._bits + bits > ep_cap:
                self._violate(
                    step_violations,
                    agent,
                    "episode_budget_exceeded",
                    f"message of {bits} bits exceeds the {ep_cap - self._bits} bits left this episode",
                )
            else:
                self._bits += bits
                self._sent[agent] += bits
                recv = self._recv
                for rec in msg.recipients:
                    box = inbox.get(rec)
                    if box is None:
                        inbox[rec] = [msg]
                    else:
                        box.append(msg)
                    recv[rec] += bits
                self.transcript.append(Delivery(r, msg))

        answerers = task.answerers
        if answers:  # then the answers, in the same order
            for agent, answer in answers:
                if agent not in answerers:
                    self._violate(
                        step_violations,
                        agent,
                        "not_an_answerer",
                        f"only {list(answerers)} answer this task",
                    )
                elif agent in answered:
                    self._violate(
                        step_violations, agent, "already_answered", "an answer was already submitted"
                    )
                elif len(answer) > self.max_answer_chars:
                    self._violate(
                        step_violations,
                        agent,
                        "answer_too_long",
                        f"{len(answer)} > {self.max_answer_chars} characters",
                    )
                    answered[agent] = Verdict(False, 0.0, "answer too long")
                else:
                    answered[agent] = task.check(answer)

        terminal = len(answered) == len(answerers)
        truncated = not terminal and r > max_rounds
        reward = 0.0
        if terminal:
            self.verdict = _combine(answered, answerers)
            reward = self.verdict.score
        views = task.views
        obs = {
            a: {"view": views[a], "inbox": tuple(inbox[a]) if a in inbox else (), "round": r} for a in live
        }
        infos = self._infos(live, task, step_violations)
        rewards = dict.fromkeys(live, reward)
        terms = dict.fromkeys(live, terminal)
        truncs = dict.fromkeys(live, truncated)
        if terminal or truncated:
            self.agents = []
        if self.render_mode == "human":
            print(self.render())
        return obs, rewards, terms, truncs, infos

    def _violate(
        self, step_violations: dict[str, list[Violation]], agent: str, kind: str, detail: str
    ) -> None:
        v = Violation(agent, self.round, kind, detail)
        step_violations.setdefault(agent, []).append(v)
        self.violations.append(v)

    # -- helpers ----------------------------------------------------------------------
    def _parse(self, agent: Any, act: Any) -> tuple[str, Message | None, str | None]:
        if agent not in self._agent_set:
            raise UnknownAgentError(f"unknown agent {agent!r}; this env's agents are {self.possible_agents}")
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
                raise ActionError(f"agent {agent!r} cannot send a message with sender {msg.sender!r}")
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

    def _infos(
        self,
        agents: list[str],
        task: Task,
        step_violations: Mapping[str, list[Violation]],
    ) -> dict[str, dict[str, Any]]:
        """Every listed agent's info dict (one pass: the per-step values are read once)."""
        budget = self.budget
        ep_cap = budget.max_bits_per_episode
        r = self.round
        left = budget.max_rounds - r
        if left < 0:
            left = 0
        bits = self._bits
        budget_left = None if ep_cap is None else ep_cap - bits
        info_bits, task_id, answerers = task.info_bits, task.task_id, task.answerers
        sent, recv, answered, verdict = self._sent, self._recv, self._answers, self.verdict
        infos = {}
        for a in agents:
            info: dict[str, Any] = {
                "round": r,
                "rounds_left": left,
                "bits_sent": sent[a],
                "bits_received": recv[a],
                "episode_bits": bits,
                "budget_left_bits": budget_left,
                "info_bits": info_bits,
                "task_id": task_id,
                "must_answer": a in answerers and a not in answered,
                "violations": tuple(step_violations[a]) if a in step_violations else (),
            }
            if verdict is not None:
                info["verdict"] = verdict
            infos[a] = info
        return infos

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
