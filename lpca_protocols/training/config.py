"""`TrainConfig`: one codec training run, read from TOML and checked before anything runs.

    model = "smollm2-135m"
    env = "lpca/SecretRelay-v0"
    level = 0
    out = "runs/codec-relay0"
    layer = 24                      # sender layer the resampler reads
    tail = 24                       # last positions of the sender prompt (0: all)
    train_episodes = 1024           # seeds train_seed .. train_seed + train_episodes - 1
    eval_episodes = 128             # held-out seeds eval_seed ..

    [codec]
    kind = "prefix"                 # or "codebook"
    k = 4
    m = 16
    inject_layer = 6                # optional: into the receiver's residual after block 6, not as a prefix
    # kind = "codebook": quantizer = "vq" | "rvq" (rvq_levels = Q) | "fsq" (fsq_levels = [8, 5, 5, 5])

    [objective]                     # each term is one weight; 0 switches it off
    answer_ce = 1.0
    teacher_kl = 0.0                # needs teacher = "p1" or "p1-view" (top level)
    infonce = 0.0
    anchor = 0.0
    reconstruction = 0.0

    [optim]
    steps = 300
    batch_size = 16
    lr = 1e-3

A cross-model bridge (`lpca train bridge`) names its receiver too; the sender is ``model``::

    model = "smollm2-135m"          # sender
    receiver = "qwen2.5-coder-0.5b" # receiver (another family, tokenizer and width)
    primer = "Message from your partner: "   # text before the packet's vectors ("": none)

    [codec]
    recolour = true                 # learned offset at the receiver's embedding mean (the normalizer)

An unknown or mistyped key is an error naming it and the keys allowed there.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lpca_envs.errors import LPCAError


class TrainConfigError(LPCAError, ValueError):
    """A training configuration is malformed (unknown key, bad value, unreadable file)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CodecConfig(_Strict):
    kind: Literal["prefix", "codebook", "kv"] = "prefix"
    """prefix: continuous k x m packet (serialized by `serializer`); codebook: k indices into K rows;
    kv: a cross-model bridge into the receiver's attention cache (channel ``kv-bridge``): the sender's
    states at `fuse` layers over its last `tail` positions, each projected (rank `width`) and gated
    into the receiver's residual stream after the matching receiver layer at `tail` placeholders."""
    fuse: int = Field(0, ge=0, le=256)
    """kind='kv': receiver layers fused, evenly spaced from the embedding output (0: every layer);
    receiver layer t reads sender layer round(t x sender layers / receiver layers)."""
    k: int = Field(4, ge=1, le=64)
    """Packet vectors = receiver prefix slots."""
    m: int = Field(16, ge=1, le=4096)
    """Width of each packet vector (codebook row width)."""
    width: int = Field(128, ge=8, le=4096)
    """Inner width of the resampler and decoder."""
    heads: int = Field(4, ge=1, le=64)
    codebook_size: int = Field(16, ge=2, le=1 << 16)
    """K, for kind='codebook'."""
    bounded: bool = True
    """Decoder output tanh(x) x a learned per-dimension scale (initialized from the embedding table)."""
    quantize_after: int = Field(0, ge=0)
    """kind='codebook': train this many steps without the quantizer first; the codebook is then
    k-means-initialized on packets that already carry the message (avoids early codebook collapse)."""
    freeze_encoder: bool = True
    """With quantize_after > 0: the quantized phase trains the decoder only (the codebook follows the
    frozen packets by EMA). Training encoder, codebook and decoder together at once drifted on the
    tiny model (the codes chase moving packets and the decoder chases the codes)."""
    serializer: str = "fp16"
    """Codec of a continuous packet for evaluation (fp16, q8_0, rotq...); the gate uses it."""
    quantizer: Literal["vq", "rvq", "fsq"] = "vq"
    """kind='codebook': vq (one K-row codebook per slot, EMA + k-means init), rvq (rvq_levels residual
    stages of K rows per slot) or fsq (finite scalar quantization on fsq_levels; K = prod(levels))."""
    rvq_levels: int = Field(1, ge=1, le=64)
    """Q, residual stages per slot (quantizer='rvq'): a message is k x Q indices."""
    fsq_levels: tuple[int, ...] = ()
    """Levels per FSQ dimension (quantizer='fsq'), each >= 3, e.g. [8, 5, 5, 5] (1000 symbols)."""
    inject_layer: int | None = Field(None, ge=0)
    """None: the decoded vectors are prefix embeddings at the receiver's marker. l: k placeholder
    positions sit at the marker and the vectors enter the receiver's residual stream after block l
    (0 = embedding output, must be below the model's block count)."""
    inject_mode: Literal["replace", "add"] = "replace"
    """With inject_layer: the vectors replace the placeholders' residual stream, or are added to it."""
    positions: int = Field(0, ge=0, le=4096)
    """Learned position embeddings of the resampler's inputs by distance from the prompt's end
    (0: none). Ordered content (the digits of a code) needs them; a single word does not."""
    whiten: bool = True
    """Standardize the sender's states by their per-dimension mean and spread on the training data
    (the normalizer's sender half). false: raw states (an ablation)."""
    recolour: bool = False
    """The normalizer's receiver half: a learned offset, initialized to the receiver's input-embedding
    mean, added to the decoder's output (whose tanh scale starts at the embeddings' spread)."""

    @model_validator(mode="after")
    def _quantizer_options(self) -> CodecConfig:
        from lpca_protocols.packet_codec import check_fsq_levels

        set_ = self.model_fields_set
        if self.kind == "prefix" and set_ & {"quantizer", "rvq_levels", "fsq_levels"}:
            raise ValueError("quantizer, rvq_levels and fsq_levels apply to kind='codebook' only")
        if self.quantizer != "rvq" and "rvq_levels" in set_ and self.rvq_levels != 1:
            raise ValueError(f"rvq_levels applies to quantizer='rvq', not {self.quantizer!r}")
        if self.quantizer != "fsq" and self.fsq_levels:
            raise ValueError(f"fsq_levels applies to quantizer='fsq', not {self.quantizer!r}")
        if self.quantizer == "fsq":
            check_fsq_levels(self.fsq_levels, ValueError)
            if "codebook_size" in set_ and self.codebook_size != math.prod(self.fsq_levels):
                raise ValueError(
                    f"with quantizer='fsq' the alphabet is prod(fsq_levels) = {math.prod(self.fsq_levels)}; "
                    f"leave codebook_size out (got {self.codebook_size})"
                )
        if "inject_mode" in set_ and self.inject_layer is None:
            raise ValueError("inject_mode needs inject_layer")
        return self

    @property
    def alphabet(self) -> int:
        """Values one symbol takes (kind='codebook'): K, or prod(fsq_levels)."""
        return math.prod(self.fsq_levels) if self.quantizer == "fsq" else self.codebook_size


class ObjectiveConfig(_Strict):
    answer_ce: float = Field(1.0, ge=0)
    """Cross-entropy of the teacher's answer through the frozen receiver (the task loss)."""
    teacher_kl: float = Field(0.0, ge=0)
    """KL(teacher || receiver) of the answer distribution at each answer position: the P1 receiver's
    (`TrainConfig.teacher`), kept as its top-32 tokens, against the codec-conditioned receiver's."""
    infonce: float = Field(0.0, ge=0)
    """Supervised InfoNCE across the batch on the packets (before quantization): packets of episodes
    with the same teacher answer attract, all others repel, so different inputs get different packets."""
    infonce_temperature: float = Field(0.1, gt=0)
    answer_probe: float = Field(0.0, ge=0)
    """Cross-entropy of the teacher's answer tokens predicted from the packet by a training-only
    linear read-out (scored against the receiver's input embeddings): a direct "carry the answer"
    signal for tasks whose answers rarely repeat in a batch, where InfoNCE has no positives."""
    anchor: float = Field(0.0, ge=0)
    """1 - cosine of each decoded vector to its nearest real input embedding."""
    anchor_metric: Literal["cosine", "mse"] = "cosine"
    """How the anchor measures the distance to the nearest embedding: 1 - cosine (scale-free), or
    the mean squared error to it (an ablation: vectors far from the embeddings' scale give it a
    gradient dominated by the scale, the failure the public Llama->Mistral bridge reported)."""
    reconstruction: float = Field(0.0, ge=0)
    """MSE of a linear read-out of the packet to the sender's (normalized) last hidden state."""
    commitment: float = Field(0.25, ge=0)
    """VQ commitment weight (kind='codebook')."""


class OptimConfig(_Strict):
    steps: int = Field(300, ge=1)
    batch_size: int = Field(16, ge=2)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    eval_every: int = Field(50, ge=1)
    checkpoint_every: int = Field(50, ge=1)


class TrainConfig(_Strict):
    model: str = "smollm2-135m"
    """The sender's model (and the receiver's, unless `receiver` names another)."""
    receiver: str | None = None
    """The receiver's model for a cross-model bridge (None: the sender's model)."""
    primer: str | None = None
    """Text before the packet's vectors in the receiver's prompt (None: the prompt book's
    ``received_latent`` line; "": the vectors alone). Stored in the checkpoint."""
    env: str = "lpca/SecretRelay-v0"
    level: int = 0
    out: str = "runs/codec"
    """Run directory: data/, checkpoints/, codec/ (the final checkpoint), history.jsonl, train_state.pt."""
    data_dir: str | None = None
    """Where episode datasets are cached (default: OUT/data); shared between runs of the same data."""
    teacher: Literal["truth", "p1", "p1-view"] = "truth"
    """Whose answer distribution `objective.teacher_kl` matches: none (truth: the reference answer,
    trained by answer_ce), the receiver given the sender's P1 text message, or given its view verbatim."""
    layer: int = -1
    """Sender layer read by the resampler (0 = embeddings, negative counts from the end)."""
    tail: int = Field(0, ge=0)
    train_seed: int = 0
    train_episodes: int = Field(1024, ge=2)
    eval_seed: int = 1_000_000
    """Held-out seeds for evaluation during training (disjoint from the training seeds)."""
    eval_episodes: int = Field(128, ge=2)
    shard_size: int = Field(256, ge=1)
    seed: int = 0
    """Seed of initialization, batch order and k-means init: the same config trains the same codec."""
    threads: int = Field(0, ge=0)
    """torch threads (0: leave as is)."""
    codec: CodecConfig = CodecConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    optim: OptimConfig = OptimConfig()


def parse_config(data: dict[str, Any] | TrainConfig) -> TrainConfig:
    if isinstance(data, TrainConfig):
        return data
    try:
        cfg = TrainConfig(**data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err.get("loc", ()))
        raise TrainConfigError(f"bad training config at {loc or 'top level'}: {err['msg']}") from None
    if not set(range(cfg.train_seed, cfg.train_seed + cfg.train_episodes)).isdisjoint(
        range(cfg.eval_seed, cfg.eval_seed + cfg.eval_episodes)
    ):
        raise TrainConfigError("eval seeds must not overlap the training seeds")
    if (cfg.teacher == "truth") != (cfg.objective.teacher_kl == 0):
        raise TrainConfigError(
            "objective.teacher_kl needs teacher = 'p1' or 'p1-view' (with 'truth' it is answer_ce), and a "
            f"P1 teacher is only used by teacher_kl; got teacher={cfg.teacher!r}, "
            f"teacher_kl={cfg.objective.teacher_kl}"
        )
    if cfg.primer is not None and "{" in cfg.primer:
        raise TrainConfigError(f"primer must be plain text without braces, got {cfg.primer!r}")
    if cfg.codec.kind == "kv":
        o = cfg.objective
        if cfg.tail < 1:
            raise TrainConfigError(
                "codec.kind = 'kv' reads a fixed number of sender positions: set tail >= 1"
            )
        if o.infonce or o.anchor or o.reconstruction or o.answer_probe or cfg.codec.inject_layer is not None:
            raise TrainConfigError(
                "codec.kind = 'kv' trains with answer_ce and teacher_kl only (and injects at every fused "
                "layer): set objective.infonce/anchor/reconstruction/answer_probe = 0 and no inject_layer"
            )
    if cfg.objective.anchor and cfg.codec.inject_layer:
        raise TrainConfigError(
            "objective.anchor pulls decoded vectors toward input embeddings; with codec.inject_layer "
            f"{cfg.codec.inject_layer} they live in the residual stream after that block: set anchor = 0"
        )
    return cfg


def is_bridge(cfg: TrainConfig) -> bool:
    """Whether `cfg` trains a cross-model bridge (a receiver other than the sender's model)."""
    return cfg.receiver is not None and cfg.receiver != cfg.model


def load_config(path: str | Path) -> TrainConfig:
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise TrainConfigError(f"cannot read training config {path}: {e}") from None
    return parse_config(data)
