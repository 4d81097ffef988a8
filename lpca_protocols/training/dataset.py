"""Episode datasets: what codec training needs from seeded episodes, cached as safetensors shards.

For every seed the collector builds the episode (`lpca_envs.make(env).reset(seed)`),
runs the sender's forward over its ``latent_sender`` prompt and keeps its hidden states
at one layer (the last `tail` positions, or all), the receiver's prompt as token ids
split at the prefix marker (``before`` / ``after``) and the teacher's answer as token ids
followed by the end-of-turn token (``target``).

Teachers: the answer tokens are always the task's reference answer (``target``, e.g.
``black`` for SecretRelay). With teacher ``p1`` (the sender writes a free P1 text message,
channel ``text``) or ``p1-view`` (the sender's view forwarded verbatim, ``text
forward_view=true``), each episode also stores the P1 receiver's answer distribution at
every target position, teacher-forced on the same tokens: its top-`TOPK` token ids and
log-probabilities (``teacher_ids``, ``teacher_logp`` [G, TOPK]); `objective.teacher_kl`
trains the codec's receiver toward it. Teacher ``truth`` stores none.

Layout of a dataset directory::

    manifest.json          the DatasetSpec, base-model fingerprint, and one entry per finished shard
    shard-00000.safetensors   hidden [n, T, d] f32, hidden_len [n], before/after/target [n, *] i64
    ...                       with their *_len, and seeds [n]

A shard is written to a temporary name, renamed, then added to the manifest, so a
collection killed at any moment and restarted skips every finished shard and redoes
at most the one it was writing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lpca_envs.errors import LPCAError
from lpca_models import PREFIX_MARKER, Conditioning

FORMAT = "lpca-episodes/1"
ARRAYS = ("hidden", "before", "after", "target")
TEACHER_ARRAYS = ("teacher_ids", "teacher_logp")
TEACHERS = ("truth", "p1", "p1-view")
TOPK = 32
"""Teacher tokens kept per answer position (the rest of its distribution is dropped)."""


class DatasetError(LPCAError, ValueError):
    """An episode dataset is missing, corrupt, or belongs to another configuration."""


@dataclass(frozen=True)
class DatasetSpec:
    """Everything that determines a dataset's contents."""

    model: str
    env_id: str
    level: int
    seed: int
    episodes: int
    layer: int
    tail: int = 0
    teacher: str = "truth"
    shard_size: int = 256
    receiver: str = ""
    """A bridge's receiver model (its prompt, tokens and P1 teacher); "": the sender's model."""
    primer: str | None = None
    """The receiver prompt's text before the packet (None: the prompt book's line)."""
    layers: tuple[int, ...] = ()
    """Several sender layers (a kv bridge): ``hidden`` holds their states side by side [T, n x d]
    (`layer` is then the first of them)."""

    def as_dict(self) -> dict[str, Any]:
        """The spec as stored in a manifest; the fields added for bridges only when set, so a
        dataset collected before them keeps its manifest (and its key)."""
        d = asdict(self)
        if not self.receiver:
            d.pop("receiver")
        if self.primer is None:
            d.pop("primer")
        if not self.layers:
            d.pop("layers")
        else:
            d["layers"] = list(self.layers)
        return d

    def shards(self) -> list[range]:
        lo, hi = self.seed, self.seed + self.episodes
        return [range(s, min(s + self.shard_size, hi)) for s in range(lo, hi, self.shard_size)]


def collect(
    spec: DatasetSpec,
    out_dir: str | Path,
    agent: Any,
    progress: Callable[[int, int], None] | None = None,
    receiver: Any = None,
) -> Path:
    """Collect (or finish collecting) the dataset `spec` into `out_dir` with `agent` (an LMAgent;
    the sender, and the receiver unless a bridge's `receiver` agent is given)."""
    import lpca_envs

    if spec.teacher not in TEACHERS:
        raise DatasetError(f"teacher must be one of {TEACHERS}, got {spec.teacher!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    backend = agent.backend
    rfp = receiver.backend.info.fingerprint if receiver is not None else None
    manifest = _open_manifest(out, spec, backend.info.fingerprint, rfp)
    done = {e["file"] for e in manifest["shards"] if (out / e["file"]).is_file()}
    env = lpca_envs.make(spec.env_id, level=spec.level)
    shards = spec.shards()
    finished = sum(len(r) for i, r in enumerate(shards) if _shard_name(i) in done)
    if progress:
        progress(finished, spec.episodes)
    for i, seeds in enumerate(shards):
        name = _shard_name(i)
        if name in done:
            continue
        rows = [
            episode_row(
                env, s, agent, spec.layer, spec.tail, spec.teacher, receiver, spec.primer, spec.layers
            )
            for s in seeds
        ]
        arrays = _pad_rows(rows)
        arrays["seeds"] = np.asarray(list(seeds), np.int64)
        from safetensors.numpy import save_file

        tmp = out / (name + ".tmp")
        save_file(arrays, str(tmp))
        tmp.replace(out / name)
        manifest["shards"] = [e for e in manifest["shards"] if e["file"] != name]
        sha = hashlib.sha256((out / name).read_bytes()).hexdigest()
        manifest["shards"].append({"file": name, "seeds": [seeds.start, seeds.stop], "sha256": sha})
        manifest["shards"].sort(key=lambda e: e["file"])
        _write_json(out / "manifest.json", manifest)
        finished += len(seeds)
        if progress:
            progress(finished, spec.episodes)
    return out


def episode_row(
    env: Any,
    seed: int,
    agent: Any,
    layer: int,
    tail: int,
    teacher: str = "truth",
    receiver: Any = None,
    primer: str | None = None,
    layers: tuple[int, ...] = (),
) -> dict[str, np.ndarray]:
    """One episode's training record: sender states, receiver prompt ids around the marker, target ids
    (and the teacher's answer distribution, for a P1 teacher). `receiver` is a bridge's receiving
    agent (another model: its prompt and tokens); None: `agent` receives too."""
    from lpca_protocols.channel import AgentContext

    obs, _ = env.reset(seed=seed)
    task = env.task
    answerer = task.answerers[0]
    holder = next(a for a in env.possible_agents if a not in task.answerers)
    ragent = receiver if receiver is not None else agent
    backend = ragent.backend
    sender = AgentContext(holder, obs[holder]["view"], task, task.family, 1, env.budget, agent, answerer)
    if layers:  # several layers side by side, from one forward
        ids = agent.backend.prompt_ids(agent.sender_prompt(task.family, sender.view))
        t = min(tail, len(ids)) if tail else len(ids)
        f = agent.backend.forward(
            ids, capture=list(layers), positions=list(range(len(ids) - t, len(ids))), logits="none"
        )
        hidden = np.concatenate([f.hidden[x] for x in layers], -1)
    else:
        hidden = agent.sender_states(task.family, sender.view, layer, tail)
    dummy = Conditioning(prefix=np.zeros((1, backend.info.hidden_size), np.float32), primer=primer)
    prompt = ragent.prompt(ragent.answer_turn(task.family, obs[answerer]["view"], dummy))
    before, _, after = prompt.partition(PREFIX_MARKER)
    if task.reference is None:
        raise DatasetError(f"{task.family}: teacher 'truth' needs tasks with a reference answer")
    target = [*backend.tokenize(str(task.reference)), min(backend.eos_ids)]
    row = {
        "hidden": np.asarray(hidden, np.float32),
        "before": np.asarray(backend.prompt_ids(before), np.int64),
        "after": np.asarray(backend.tokenize(after), np.int64),
        "target": np.asarray(target, np.int64),
    }
    if teacher != "truth":
        rctx = AgentContext(
            answerer,
            obs[answerer]["view"],
            task,
            task.family,
            1,
            env.budget,
            ragent,
            holder,
            is_answerer=True,
        )
        row.update(p1_teacher(sender, rctx, target, forward_view=teacher == "p1-view"))
    return row


def p1_teacher(sender: Any, receiver: Any, target: list[int], forward_view: bool) -> dict[str, np.ndarray]:
    """The P1 receiver's top-`TOPK` answer distribution at each position of `target` (teacher-forced)."""
    from lpca_protocols.plugins import make_channel

    chan = make_channel("text", forward_view=forward_view)
    (msg,) = chan.send([sender])
    if msg is not None:
        receiver.received.append(msg)
    (cond,) = chan.receive([receiver])
    agent = receiver.agent
    ids = agent.backend.prompt_ids(agent.prompt(agent.answer_turn(receiver.family, receiver.view, cond)))
    logits = agent.backend.forward(ids + target[:-1], logits="all").logits[len(ids) - 1 :]  # [G, V]
    z = logits.astype(np.float64)
    logp = z - z.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    top = np.argsort(-logp, axis=-1, kind="stable")[:, :TOPK]
    return {
        "teacher_ids": top.astype(np.int64),
        "teacher_logp": np.take_along_axis(logp, top, -1).astype(np.float32),
    }


@dataclass
class EpisodeData:
    """A whole dataset in memory, padded: arrays of every shard concatenated in seed order."""

    spec: DatasetSpec
    fingerprint: str
    arrays: dict[str, np.ndarray]
    receiver_fingerprint: str | None = None
    """A bridge dataset's receiver model (None: the sender's)."""

    def __len__(self) -> int:
        return len(self.arrays["seeds"])


def load(path: str | Path) -> EpisodeData:
    """Read a complete dataset (every shard of its spec present and intact)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load as st_load

    path = Path(path)
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        spec = DatasetSpec(**{**manifest["spec"], "layers": tuple(manifest["spec"].get("layers", ()))})
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise DatasetError(f"{path} is not an episode dataset ({type(e).__name__}: {e})") from None
    by_file = {e["file"]: e for e in manifest["shards"]}
    rows: list[dict[str, np.ndarray]] = []
    for i, _ in enumerate(spec.shards()):
        name = _shard_name(i)
        f = path / name
        if name not in by_file or not f.is_file():
            raise DatasetError(f"{path}: shard {name} is missing; rerun the collection to finish it")
        data = f.read_bytes()
        if hashlib.sha256(data).hexdigest() != by_file[name]["sha256"]:
            raise DatasetError(f"{f} is corrupt (sha256 differs from the manifest)")
        try:
            rows.append(st_load(data))
        except SafetensorError as e:
            raise DatasetError(f"{f} is not a readable safetensors file: {e}") from None
    arrays: dict[str, np.ndarray] = {}
    for key in _keys(rows[0]):
        width = max(r[key].shape[1] for r in rows)
        parts = []
        for r in rows:
            a = r[key]
            pad = [(0, 0), (0, width - a.shape[1])] + [(0, 0)] * (a.ndim - 2)
            parts.append(np.pad(a, pad))
        arrays[key] = np.concatenate(parts)
        arrays[key + "_len"] = np.concatenate([r[key + "_len"] for r in rows])
    arrays["seeds"] = np.concatenate([r["seeds"] for r in rows])
    return EpisodeData(spec, manifest["fingerprint"], arrays, manifest.get("receiver_fingerprint"))


def _keys(row: dict[str, np.ndarray]) -> tuple[str, ...]:
    return ARRAYS + (TEACHER_ARRAYS if TEACHER_ARRAYS[0] in row else ())


def _pad_rows(rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key in _keys(rows[0]):
        arrs = [r[key] for r in rows]
        width = max(len(a) for a in arrs)
        shape = (len(arrs), width, *arrs[0].shape[1:])
        buf = np.zeros(shape, arrs[0].dtype)
        for j, a in enumerate(arrs):
            buf[j, : len(a)] = a
        out[key] = buf
        out[key + "_len"] = np.asarray([len(a) for a in arrs], np.int64)
    return out


def _open_manifest(
    out: Path, spec: DatasetSpec, fingerprint: str, receiver_fingerprint: str | None = None
) -> dict[str, Any]:
    f = out / "manifest.json"
    want = {"format": FORMAT, "spec": spec.as_dict(), "fingerprint": fingerprint, "shards": []}
    if receiver_fingerprint is not None and receiver_fingerprint != fingerprint:
        want["receiver_fingerprint"] = receiver_fingerprint
    if not f.exists():
        _write_json(f, want)
        return want
    try:
        have = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{f} is not JSON ({e})") from None
    for key in ("format", "spec", "fingerprint", "receiver_fingerprint"):
        if have.get(key) != want.get(key):
            raise DatasetError(
                f"{out} holds another dataset ({key} differs: {have.get(key)!r} vs {want.get(key)!r}); "
                "use another directory"
            )
    return have


def _shard_name(i: int) -> str:
    return f"shard-{i:05d}.safetensors"


def _write_json(f: Path, doc: dict[str, Any]) -> None:
    tmp = f.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(f)
