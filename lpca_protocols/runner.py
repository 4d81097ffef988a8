"""The episode runner: (env, channel, model, budget, seeds) -> one record per episode, in a run directory.

Episodes run in batches in lockstep: every agent of every episode in a batch is
served by one backend call per phase and model, so one model instance serves all
the agents that use it. Agents may use different models (``model="A=smollm2-135m,
B=qwen2.5-coder-0.5b"``, `parse_models`): each distinct model is loaded once.
Per-episode wall times are the batch's phase time divided by the batch size.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib.metadata
import json
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lpca_envs
from lpca_envs import Budget, Message
from lpca_envs.errors import LPCAError
from lpca_models.agents import LMAgent, extract_answer
from lpca_protocols.channel import AgentContext, Channel, ChannelError, Requirement
from lpca_protocols.episode_log import EpisodeRecord, append_episodes, read_episodes, write_atomic
from lpca_protocols.plugins import make_channel
from lpca_protocols.stats import wilson


class RunError(LPCAError, ValueError):
    """A run was configured with bad or incompatible arguments."""


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's episodes (timings aside)."""

    env_id: str
    channel: str
    model: str
    """A model for every agent (zoo id, local directory or .gguf), or one per agent:
    ``"A=smollm2-135m,B=qwen2.5-coder-0.5b"`` (`parse_models`)."""
    level: int = 0
    episodes: int = 50
    seed: int = 0
    channel_options: dict[str, Any] = field(default_factory=dict)
    budget_bits_per_message: int | None = None
    budget_bits_per_episode: int | None = None
    rounds: int | None = None
    backend: str = "torch"
    batch_size: int = 8
    max_new_tokens: int = 24
    """Longest answer, in tokens, raised to the family's ``answer_tokens`` where that is more (a code
    family's answer is a whole function); channels set their own message lengths."""

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


@dataclass
class RunResult:
    config: RunConfig
    records: list[dict[str, Any]]
    summary: dict[str, Any]
    run_dir: Path | None


def validate(cfg: RunConfig) -> tuple[Channel, Budget, Any]:
    if cfg.env_id not in lpca_envs.list_envs():
        raise RunError(f"unknown env id {cfg.env_id!r}; known ids: {', '.join(lpca_envs.list_envs())}")
    family = lpca_envs.get_family(cfg.env_id)
    if cfg.level not in family.levels:
        raise RunError(f"{cfg.env_id}: level must be one of {list(family.levels)}, got {cfg.level!r}")
    for name in ("episodes", "batch_size", "max_new_tokens"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise RunError(f"{name} must be an int >= 1, got {v!r}")
    parse_models(cfg.model, tuple(family.agents))
    channel = make_channel(cfg.channel, **cfg.channel_options)
    base = family.default_budget(cfg.level)
    rounds = cfg.rounds if cfg.rounds is not None else max(base.max_rounds, channel.rounds)
    if rounds < channel.rounds:
        raise RunError(f"channel {cfg.channel!r} needs {channel.rounds} rounds; the budget allows {rounds}")
    try:
        budget = Budget(cfg.budget_bits_per_message, cfg.budget_bits_per_episode, rounds)
    except LPCAError as e:
        raise RunError(str(e)) from None
    return channel, budget, family


def parse_models(spec: str, agents: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Which model each of `agents` uses: one id for all, or ``"A=id,B=id"`` naming every agent.

    A model id never holds ``=``; a per-agent spec names each agent once, no other names.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise RunError(f"model must be a model id or 'AGENT=id,...', got {spec!r}")
    if "=" not in spec:
        return {a: spec.strip() for a in agents}
    out: dict[str, str] = {}
    for part in spec.split(","):
        name, eq, model = (x.strip() for x in part.partition("="))
        if not eq or not name or not model:
            raise RunError(
                f"model spec {spec!r}: each part must be AGENT=model-id (agents {', '.join(agents)}), "
                f"got {part.strip()!r}"
            )
        if name not in agents:
            raise RunError(
                f"model spec {spec!r}: unknown agent {name!r}; this task's agents are {', '.join(agents)}"
            )
        if name in out:
            raise RunError(f"model spec {spec!r}: agent {name!r} is given twice")
        out[name] = model
    missing = [a for a in agents if a not in out]
    if missing:
        raise RunError(
            f"model spec {spec!r}: no model for agent(s) {', '.join(missing)}; name every agent "
            f"({', '.join(agents)}) or give one model id for all"
        )
    return out


def load_agents(
    spec: str,
    agents: tuple[str, ...] | list[str],
    *,
    backend: str = "torch",
    max_new_tokens: int = 24,
    loaded: dict[str, LMAgent] | None = None,
) -> dict[str, LMAgent]:
    """Each agent's `LMAgent`: every distinct model of `spec` loaded once (reusing `loaded`,
    a model id -> agent cache the caller keeps across runs)."""
    import lpca_models

    pool = loaded if loaded is not None else {}
    out = {}
    for name, model in parse_models(spec, agents).items():
        if model not in pool:
            pool[model] = LMAgent(lpca_models.load(model, backend=backend), max_new_tokens=max_new_tokens)
        out[name] = pool[model]
    return out


def check_requirements(channel: Channel, sender: Any, receiver: Any) -> None:
    """Refuse a channel whose needs the agents' models cannot meet."""
    for who, agent in (("sender", sender), ("receiver", receiver)):
        if not isinstance(agent, LMAgent):
            raise ChannelError(
                f"channel {channel.name!r} needs a language-model {who}, got {type(agent).__name__}"
            )
    if channel.requires is Requirement.WHITE_BOX_SAME_MODEL:
        a, b = sender.backend.info.fingerprint, receiver.backend.info.fingerprint
        if a != b:
            raise ChannelError(
                f"channel {channel.name!r} needs sender and receiver to be the same model; got "
                f"{sender.backend.info.name} and {receiver.backend.info.name} (a cross-model pair "
                "talks through text channels or a trained latent-bridge)"
            )
    channel.check_pair(sender.backend.info, receiver.backend.info)


def _check_pairs(channel: Channel, tasks: list[Any], agents: Mapping[str, LMAgent], seen: set) -> None:
    """`check_requirements` for every (holder -> answerer) pair of `tasks`' agents, once per pair."""
    for task in tasks:
        for b in task.answerers:
            for a in agents:
                if a not in task.answerers and (a, b) not in seen:
                    check_requirements(channel, agents[a], agents[b])
                    seen.add((a, b))


def run(
    env_id: str,
    channel: str,
    model: str,
    *,
    out_dir: str | Path | None = "runs",
    run_dir: str | Path | None = None,
    agent: LMAgent | Mapping[str, LMAgent] | None = None,
    progress: Callable[[int, int], None] | None = None,
    **options: Any,
) -> RunResult:
    """Run `episodes` seeded episodes of `env_id` with `channel` on `model` and record each one.

    `options` are `RunConfig` fields (level, episodes, seed, channel_options,
    budget_bits_per_message, budget_bits_per_episode, rounds, backend, batch_size,
    max_new_tokens). Pass a ready `agent` to reuse a loaded model across runs: one
    `LMAgent` for every agent, or a mapping agent name -> `LMAgent` (`load_agents`) for
    a per-agent `model` spec.

    Records go to a new timestamped directory under `out_dir`, or, with `run_dir`, to
    that exact directory, resuming it: the episodes already in its log are kept (a
    torn last line is cut off), only the missing batches run, and their records are
    appended. A batch whose records were cut short by a kill runs again whole, so a
    resumed run records what an uninterrupted one would (per-episode token counts
    are batch means). Resuming a directory whose `config.json` differs raises.
    """
    unknown = set(options) - set(RunConfig.__dataclass_fields__)
    if unknown:
        raise RunError(
            f"unknown run option(s) {sorted(unknown)}; known: {sorted(RunConfig.__dataclass_fields__)}"
        )
    cfg = RunConfig(env_id, channel, model, **options)
    chan, budget, family = validate(cfg)
    all_seeds = range(cfg.seed, cfg.seed + cfg.episodes)
    records: list[dict[str, Any]] = []
    if run_dir is not None:
        run_dir = Path(run_dir)
        records = resume_run_dir(run_dir, cfg)
    done = {r["seed"] for r in records}
    batches = [list(all_seeds[i : i + cfg.batch_size]) for i in range(0, cfg.episodes, cfg.batch_size)]
    partial = [s for b in batches if not set(b) <= done for s in b if s in done]
    if partial and run_dir is not None:
        # a batch cut short by a kill runs again whole, so a resumed run equals an uninterrupted one
        records = [r for r in records if r["seed"] not in partial]
        write_atomic(run_dir / "episodes.jsonl", "".join(json.dumps(r) + "\n" for r in records))
        done -= set(partial)
    seeds = [s for b in batches if not set(b) <= done for s in b]
    if records and progress is not None:
        progress(len(records), cfg.episodes)
    names = tuple(family.agents)
    agents = _agents_for(cfg, names, agent) if seeds or agent is not None else None
    checked: set[tuple[str, str]] = set()
    if agents is not None:  # the agents of the run's first task; every batch checks its own below
        env0 = lpca_envs.make(env_id, level=cfg.level, budget=budget)
        env0.reset(seed=cfg.seed)
        _check_pairs(chan, [env0.task], agents, checked)
    if run_dir is None and out_dir is not None:  # a new run's directory, once its models are known to fit
        run_dir = _open_run_dir(out_dir, cfg)
    envs = [
        lpca_envs.make(env_id, level=cfg.level, budget=budget) for _ in range(min(cfg.batch_size, len(seeds)))
    ]
    for start in range(0, len(seeds), cfg.batch_size):
        batch = seeds[start : start + cfg.batch_size]
        answer_tokens = max(cfg.max_new_tokens, family.answer_tokens)
        recs = _run_batch(envs[: len(batch)], batch, chan, agents, family.name, answer_tokens, checked)
        records.extend(r.as_dict() for r in recs)
        if run_dir is not None:
            append_episodes(run_dir / "episodes.jsonl", recs)
        if progress is not None:
            progress(len(records), cfg.episodes)
    records.sort(key=lambda r: r["seed"])
    summary = summarize(records)
    summary.update(channel=chan.describe(), env_id=env_id, level=cfg.level, model=model)
    if run_dir is not None:
        write_atomic(run_dir / "summary.json", json.dumps(summary, indent=2))
    return RunResult(cfg, records, summary, run_dir)


def _agents_for(
    cfg: RunConfig, names: tuple[str, ...], agent: LMAgent | Mapping[str, LMAgent] | None
) -> dict[str, LMAgent]:
    """Each agent's LMAgent: the given one(s), checked against the config's model spec, or loaded."""
    models = parse_models(cfg.model, names)
    if agent is None:
        return load_agents(cfg.model, names, backend=cfg.backend, max_new_tokens=cfg.max_new_tokens)
    if isinstance(agent, Mapping):
        missing = [n for n in names if n not in agent]
        if missing:
            raise RunError(f"agent mapping has no LMAgent for agent(s) {', '.join(missing)}")
        agents = {n: agent[n] for n in names}
    else:
        if len(set(models.values())) > 1:
            raise RunError(
                f"model spec {cfg.model!r} names {len(set(models.values()))} models but one ready agent "
                "was given; pass a mapping agent name -> LMAgent (`load_agents`)"
            )
        agents = dict.fromkeys(names, agent)
    # agents that share a model id must share one loaded model (and different ids different ones)
    by_model: dict[str, int] = {}
    for n in names:
        if by_model.setdefault(models[n], id(agents[n])) != id(agents[n]):
            raise RunError(f"agents using model {models[n]!r} must share one LMAgent")
    return agents


def resume_run_dir(run_dir: Path, cfg: RunConfig) -> list[dict[str, Any]]:
    """Create `run_dir` for `cfg`, or check that it belongs to `cfg`; its complete records, repaired."""
    cfg_file = run_dir / "config.json"
    want = json.loads(json.dumps(asdict(cfg), default=str))
    if cfg_file.exists():
        try:
            have = json.loads(cfg_file.read_text())
        except json.JSONDecodeError as e:
            raise RunError(f"{cfg_file} is not JSON ({e})") from None
        if have != want:
            diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
            raise RunError(
                f"{run_dir} holds a different run (config.json differs in {diff}); "
                "resume it with its own config or use another directory"
            )
        return read_episodes(
            run_dir / "episodes.jsonl", repair=True, seeds=range(cfg.seed, cfg.seed + cfg.episodes)
        )
    _init_run_dir(run_dir, cfg, exist_ok=True)
    return []


@dataclass
class _Batch:
    """Episodes run in lockstep, between the phases of `_run_batch`."""

    envs: list
    seeds: list[int]
    tasks: list
    ctxs: list[dict[str, AgentContext]]
    """Per episode, each agent's context."""
    agents: dict[str, LMAgent]
    """Each agent name's LMAgent (several names may share one)."""
    family: str
    phase: dict[str, float] = field(default_factory=lambda: {"sender": 0.0, "channel": 0.0, "receiver": 0.0})
    passes: list[int] = field(default_factory=list)
    messages: list[list[dict[str, Any]]] = field(default_factory=list)
    answers: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.passes = [0] * len(self.envs)
        self.messages = [[] for _ in self.envs]

    def backends(self) -> list[Any]:
        """The distinct backends of this batch's agents."""
        return list({id(a.backend): a.backend for a in self.agents.values()}.values())

    def counters(self) -> tuple[int, int, int]:
        """(generated tokens, prompt tokens, forward passes) summed over the batch's backends."""
        ts = [be.timing for be in self.backends()]
        return (
            sum(t.generated_tokens for t in ts),
            sum(t.prompt_tokens for t in ts),
            sum(t.forward_passes for t in ts),
        )


def _run_batch(
    envs: list,
    seeds: list[int],
    chan: Channel,
    agents: dict[str, LMAgent],
    family: str,
    max_answer_tokens: int,
    checked: set | None = None,
) -> list[EpisodeRecord]:
    """One batch of episodes, phase by phase (ARCHITECTURE's "one episode, end to end")."""
    batch = _reset(envs, seeds, agents, family)
    _check_pairs(chan, batch.tasks, agents, checked if checked is not None else set())
    gen0 = batch.counters()
    for r in range(1, chan.rounds + 1):
        _send_round(batch, chan, r)
    _receive_and_answer(batch, chan, max_answer_tokens)
    gen1 = batch.counters()
    return _records(batch, (gen1[0] - gen0[0], gen1[1] - gen0[1]))


def _reset(envs: list, seeds: list[int], agents: dict[str, LMAgent], family: str) -> _Batch:
    """Reset every env to its seed; each agent's context (view, task, budget, peer)."""
    obs = [env.reset(seed=s)[0] for env, s in zip(envs, seeds)]
    tasks = [env.task for env in envs]
    ctxs: list[dict[str, AgentContext]] = []
    for env, task, ob in zip(envs, tasks, obs):
        answerer = task.answerers[0]
        holders = [a for a in env.possible_agents if a not in task.answerers]
        row = {}
        for a in env.possible_agents:
            peer = answerer if a != answerer else (holders[0] if holders else a)
            row[a] = AgentContext(
                a,
                ob[a]["view"],
                task,
                family,
                0,
                env.budget,
                agents[a],
                peer,
                is_answerer=a in task.answerers,
            )
        ctxs.append(row)
    return _Batch(envs, seeds, tasks, ctxs, agents, family)


def _send_round(b: _Batch, chan: Channel, r: int) -> None:
    """Round `r`: every agent's `channel.send`, then each env steps with the messages (delivery)."""
    n = len(b.envs)
    flat = [(i, c) for i in range(n) for c in b.ctxs[i].values()]
    for _, c in flat:
        c.round = r
    t = time.perf_counter()
    before = b.counters()[2]
    sent = chan.send([c for _, c in flat])
    b.phase["sender"] += time.perf_counter() - t
    calls = b.counters()[2] - before
    if not chan.batched_send:  # one forward sequence per sender: each episode's share
        calls = -(-calls // max(1, sum(m is not None for m in sent)))
    t = time.perf_counter()
    actions: list[dict[str, Any]] = [{} for _ in range(n)]
    for (i, c), msg in zip(flat, sent):
        if msg is not None:
            if not isinstance(msg, Message):
                raise ChannelError(
                    f"channel {chan.name!r} returned {type(msg).__name__}, expected Message or None"
                )
            actions[i][c.name] = {"message": msg}
            c.sent.append(msg)
            b.passes[i] += calls
    for i, env in enumerate(b.envs):
        if not env.agents:
            continue
        ob, *_ = env.step(actions[i])
        for a, o in ob.items():
            b.ctxs[i][a].received.extend(o["inbox"])
        for a, act in actions[i].items():
            m = act["message"]
            delivered = any(d.message is m for d in env.transcript)
            b.messages[i].append(
                {"round": r, "sender": a, "bits": m.bits, "kind": m.kind, "delivered": delivered}
            )
    b.phase["channel"] += time.perf_counter() - t


def _receive_and_answer(b: _Batch, chan: Channel, max_answer_tokens: int) -> None:
    """`channel.receive` for every answerer, then its answer (one batched generation), then the verifier."""
    answer_ctxs = [
        (i, b.ctxs[i][a]) for i in range(len(b.envs)) for a in b.tasks[i].answerers if b.envs[i].agents
    ]
    t = time.perf_counter()
    conds = chan.receive([c for _, c in answer_ctxs])
    # diagnostics (e.g. payload sensitivity) are measurements, not part of the protocol's latency
    diag = sum(float(c.diagnostics.get("diagnostic_time_s", 0.0)) for _, c in answer_ctxs)
    b.phase["channel"] += time.perf_counter() - t - diag
    t = time.perf_counter()
    gens: list[Any] = [None] * len(answer_ctxs)
    groups: dict[int, list[int]] = {}  # one batched generation per model
    for j, (_, c) in enumerate(answer_ctxs):
        groups.setdefault(id(c.agent), []).append(j)
    for idx in groups.values():
        agent = answer_ctxs[idx[0]][1].agent
        turns = [agent.answer_turn(b.family, answer_ctxs[j][1].view, conds[j]) for j in idx]
        for j, g in zip(idx, agent.run(turns, max_new_tokens=max_answer_tokens)):
            gens[j] = g
    b.phase["receiver"] += time.perf_counter() - t
    for (i, c), g in zip(answer_ctxs, gens):
        b.answers[i] = extract_answer(g.text)
        b.envs[i].step({c.name: {"answer": b.answers[i]}})
        b.passes[i] += g.forward_passes


def _records(b: _Batch, generated: tuple[int, int]) -> list[EpisodeRecord]:
    """One record per episode; tokens and times are the batch's shared evenly."""
    n = len(b.envs)
    out = []
    for i, (env, task, s) in enumerate(zip(b.envs, b.tasks, b.seeds)):
        v = env.verdict
        out.append(
            EpisodeRecord(
                task_id=task.task_id,
                seed=s,
                success=bool(v and v.success),
                score=v.score if v else 0.0,
                detail=v.detail if v else "no answer",
                answer=b.answers.get(i),
                messages=b.messages[i],
                bits=env.episode_bits,
                info_bits=task.info_bits,
                tokens_generated=generated[0] // n,
                prompt_tokens=generated[1] // n,
                forward_passes=b.passes[i],
                time_sender_s=b.phase["sender"] / n,
                time_channel_s=b.phase["channel"] / n,
                time_receiver_s=b.phase["receiver"] / n,
                violations=[vi.as_dict() for vi in env.violations],
                diagnostics={k: v for c in b.ctxs[i].values() for k, v in c.diagnostics.items()},
            )
        )
    return out


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(records)
    k = sum(r["success"] for r in records)
    lo, hi = wilson(k, n)

    def mean(key: str) -> float:
        return sum(r[key] for r in records) / n if n else 0.0

    return {
        "episodes": n,
        "successes": k,
        "success_rate": k / n if n else 0.0,
        "ci95": [lo, hi],
        "mean_bits": mean("bits"),
        "mean_info_bits": mean("info_bits"),
        "mean_tokens_generated": mean("tokens_generated"),
        "mean_prompt_tokens": mean("prompt_tokens"),
        "mean_time_s": sum(r["time_sender_s"] + r["time_channel_s"] + r["time_receiver_s"] for r in records)
        / n
        if n
        else 0.0,
        "violations": sum(len(r["violations"]) for r in records),
    }


def _open_run_dir(out_dir: str | Path, cfg: RunConfig) -> Path:
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
    name = f"{stamp}-{cfg.env_id.replace('/', '_')}-{cfg.channel}-{cfg.key()}"
    # two runs of one config can start within the same second: the second gets a suffix
    for n in range(1, 1000):
        d = Path(out_dir) / (name if n == 1 else f"{name}-{n}")
        try:
            _init_run_dir(d, cfg, exist_ok=False)
        except FileExistsError:
            continue
        return d
    raise FileExistsError(f"{Path(out_dir) / name}: 999 runs of this config started in one second")


def _init_run_dir(d: Path, cfg: RunConfig, exist_ok: bool) -> None:
    d.mkdir(parents=True, exist_ok=exist_ok)
    (d / "episodes.jsonl").touch()
    meta = {"git_commit": _git_commit(), "versions": _versions()}
    write_atomic(d / "meta.json", json.dumps(meta, indent=2))
    # config.json last: its presence marks a directory that belongs to this run
    write_atomic(d / "config.json", json.dumps(asdict(cfg), indent=2, default=str))


def _git_commit() -> str:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _versions() -> dict[str, str]:
    out = {}
    for pkg in (
        "lpca",
        "torch",
        "transformers",
        "mlx",
        "mlx-lm",
        "numpy",
        "pettingzoo",
        "gymnasium",
        "pluggy",
    ):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[pkg] = importlib.metadata.version(pkg)
    return out
