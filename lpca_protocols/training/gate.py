"""The gate of a learned codec: it must beat its own controls and the no-communication floor.

On held-out seeds, through the real channel and the runner (greedy, the verifier decides):
success(normal) must exceed success(shuffle), success(null) and success(random), each
with a one-sided two-proportion z-test p < `alpha` (0.01) on >= 200 episodes, and must
exceed P0 (channel ``none``) by the same test. A codec that fails is reported as failing
with the numbers; nothing here tunes anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lpca_protocols.packet_codec import load_checkpoint
from lpca_protocols.stats import GATE_MIN_EPISODES, two_proportion_p
from lpca_protocols.training.metrics import CodebookUsage, codebook_usage, slot_usage

CONTROLS = ("shuffle", "null", "random")
MIN_EPISODES = GATE_MIN_EPISODES


@dataclass(frozen=True)
class ControlResult:
    """One comparison row: a reference's successes and the test of normal > reference."""

    name: str
    successes: int
    episodes: int
    p_value: float
    """One-sided p of success(normal) > success(this), two-proportion z-test (pooled)."""

    @property
    def rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0


@dataclass(frozen=True)
class GateReport:
    channel: str
    checkpoint: str
    env_id: str
    level: int
    seed: int
    episodes: int
    alpha: float
    successes: int
    bits_per_episode: float
    references: tuple[ControlResult, ...]
    """shuffle, null, random and p0."""
    passed: bool
    reasons: tuple[str, ...] = ()
    """Why it failed (empty when it passed)."""
    usage: CodebookUsage | None = None
    slot_usage: tuple[CodebookUsage, ...] = ()
    """Per message position (slot; rvq: slot x stage) of the normal run's symbols."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0

    def table(self) -> str:
        rows = [
            f"gate {'PASSED' if self.passed else 'FAILED'}: {self.channel} {self.checkpoint} "
            f"on {self.env_id} level {self.level}, seeds {self.seed}..{self.seed + self.episodes - 1}",
            f"  normal   {self.successes:4d}/{self.episodes}  {self.rate:6.1%}  "
            f"{self.bits_per_episode:.0f} bits/episode",
        ]
        for r in self.references:
            rows.append(f"  {r.name:8s} {r.successes:4d}/{r.episodes}  {r.rate:6.1%}  p={r.p_value:.2e}")
        if self.usage is not None:
            u = self.usage
            rows.append(f"  codebook: {u.used}/{u.size} used, {u.dead} dead, perplexity {u.perplexity:.2f}")
        if self.slot_usage:
            per = " ".join(f"{u.perplexity:.1f}/{u.dead}" for u in self.slot_usage)
            rows.append(f"  per position (perplexity/dead): {per}")
        rows += [f"  reason: {r}" for r in self.reasons]
        return "\n".join(rows)


def bridge_models(ckpt: Any, env_id: str) -> str:
    """The per-agent model spec of a bridge checkpoint on `env_id`: its sender model for every
    holder, its receiver model for every answerer ("A=sender,B=receiver")."""
    import lpca_envs

    family = lpca_envs.get_family(env_id)
    env = lpca_envs.make(env_id)
    env.reset(seed=0)
    answerers = set(env.task.answerers)
    sender = ckpt.sender_model or ckpt.base_model
    return ",".join(f"{a}={ckpt.base_model if a in answerers else sender}" for a in family.agents)


def run_gate(
    checkpoint: str | Path,
    *,
    env_id: str = "lpca/SecretRelay-v0",
    level: int = 0,
    model: str | None = None,
    agent: Any = None,
    backend: str = "torch",
    seed: int = 2_000_000,
    episodes: int = MIN_EPISODES,
    alpha: float = 0.01,
    codec: str = "fp16",
    batch_size: int = 8,
    out_dir: str | Path | None = None,
) -> GateReport:
    """Run the codec's channel and its controls, and P0, on the same held-out seeds; test the gate.

    `checkpoint` is a directory or a published name (`registry.resolve`). `model` defaults to the
    checkpoint's base model (a bridge's: its sender for the holder, its receiver for the answerer,
    `bridge_models`); pass a loaded `agent` (or a mapping agent name -> agent) to reuse it.
    `codec` serializes a continuous packet (ignored by the codebook channel).
    """
    from lpca_protocols.packet_codec import resolve
    from lpca_protocols.runner import run

    checkpoint = resolve(checkpoint)
    ckpt = load_checkpoint(checkpoint)
    channel = "latent-prefix" if ckpt.spec.kind == "prefix" else "latent-codebook"
    if ckpt.is_bridge:
        channel = "latent-bridge"
        model = model or bridge_models(ckpt, env_id)
    if ckpt.spec.kind == "kv":
        channel = "kv-bridge"
    model = model or ckpt.base_model
    opts: dict[str, Any] = {"checkpoint": str(checkpoint)}
    if ckpt.spec.kind in ("prefix", "kv"):
        opts["codec"] = codec
    if agent is None:
        import lpca_envs
        from lpca_protocols.runner import load_agents

        names = tuple(lpca_envs.get_family(env_id).agents)
        agent = load_agents(model, names, backend=backend, max_new_tokens=24)
    common = dict(
        agent=agent,
        out_dir=out_dir,
        episodes=episodes,
        level=level,
        seed=seed,
        batch_size=batch_size,
        backend=backend,
    )
    results: dict[str, Any] = {}
    for control in ("none", *CONTROLS):
        results[control] = run(env_id, channel, model, channel_options={**opts, "control": control}, **common)
    results["p0"] = run(env_id, "none", model, **common)
    normal = results["none"]
    k, n = normal.summary["successes"], normal.summary["episodes"]
    refs = []
    reasons = []
    for name in (*CONTROLS, "p0"):
        s = results[name].summary
        p = two_proportion_p(k, n, s["successes"], s["episodes"])
        refs.append(ControlResult(name, s["successes"], s["episodes"], p))
        if not p < alpha:
            reasons.append(
                f"normal {k}/{n} does not beat {name} {s['successes']}/{s['episodes']} (p={p:.3g})"
            )
    if n < MIN_EPISODES:
        reasons.append(f"{n} episodes; the gate needs >= {MIN_EPISODES}")
    usage, per_slot = None, ()
    if channel == "latent-codebook":
        msgs = [r.get("diagnostics", {}).get("symbols", []) for r in normal.records]
        usage = codebook_usage([x for m in msgs for x in m], ckpt.spec.codebook_size)
        full = [m for m in msgs if len(m) == ckpt.spec.symbols_per_message]
        if full:
            per_slot = tuple(slot_usage(full, ckpt.spec.codebook_size))
    return GateReport(
        channel=channel,
        checkpoint=str(checkpoint),
        env_id=env_id,
        level=level,
        seed=seed,
        episodes=n,
        alpha=alpha,
        successes=k,
        bits_per_episode=normal.summary["mean_bits"],
        references=tuple(refs),
        passed=not reasons,
        reasons=tuple(reasons),
        usage=usage,
        slot_usage=per_slot,
    )
