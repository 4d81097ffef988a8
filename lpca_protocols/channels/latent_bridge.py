"""`latent-bridge`: a trained bridge between two different models, through hidden states.

The sender (one model) reads its view; a trained bridge (`lpca train bridge`,
`lpca_protocols.training`) turns its hidden states at a layer into a packet and the
receiver (another model: other family, tokenizer or width) reads the decoded packet as
k input embeddings of its own width, after a short primer text. The bridge is the
learned packet codec (`lpca_protocols.packet_codec`) with:

- a statistical normalizer: the sender layer's per-dimension statistics standardize its
  states (``enc.mu``/``enc.sd``, measured on the training data and stored with the
  checkpoint), and the decoder's bounded output (tanh x a learned scale initialized from
  the receiver's embedding spread) is recoloured by a learned offset initialized to the
  receiver's embedding mean (``dec.shift``, spec ``recolour``);
- a Perceiver-style resampler (k learned queries): it discards the sender's positional
  geometry and tokenizer, so any pair of widths and vocabularies works;
- the primer: the checkpoint's ``primer`` text (default: the prompt book's
  "Message from your partner: ") before the k vectors, or a mid-layer injection
  (spec ``inject_layer``).

A continuous bridge's packet (k x m floats) crosses as bytes through any training-free
codec (``codec``: fp16, q8_0, rotq:bits=B, rotq-tcq...), a discrete one (kind
'codebook': VQ / RVQ / FSQ) as bit-packed indices; either way the bits are exact.
Controls (null, shuffle, random) act on the packet or the indices before they are
encoded, as for every latent channel.

The checkpoint records both models' fingerprints. The runner asks the channel about
the pair before any episode runs (`check_pair`): another sender or receiver is refused
with a `CheckpointMismatchError` naming the pair the bridge was trained for, and a
packet from a model other than the bridge's sender, or of another width, is refused by
the receiver (`LatentMismatchError`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lpca_envs import Message
from lpca_models import Conditioning
from lpca_protocols.channel import AgentContext, ChannelError, Requirement
from lpca_protocols.channels._latent import LatentChannel, LatentMismatchError
from lpca_protocols.channels.latent_codebook import LatentCodebookChannel
from lpca_protocols.channels.latent_prefix import LatentPrefixChannel, LatentPrefixOptions
from lpca_protocols.codecs.index import IndexCodec
from lpca_protocols.packet_codec import CodecRunner, load_checkpoint, resolve


class LatentBridgeOptions(LatentPrefixOptions):
    """``checkpoint`` (a trained bridge: directory or published name) and, for a continuous
    bridge, the ``codec`` its packet crosses with (a discrete bridge always sends indices)."""


class BridgeChecks:
    """What both bridges check of a pair and of a packet (`self.runner`: the bridge's `CodecRunner`)."""

    name: str
    options: Any
    runner: CodecRunner

    def check_pair(self, sender: Any, receiver: Any) -> None:
        ckpt = self.runner.ckpt
        ckpt.check_sender(sender.fingerprint, sender.name)
        ckpt.check_base(receiver.fingerprint, receiver.name)

    def check_origin(self, msg: Message) -> None:
        """Refuse a packet whose sender model is not the bridge's sender."""
        ckpt = self.runner.ckpt
        fp = (msg.meta or {}).get("fingerprint")
        want = ckpt.sender_fingerprint or ckpt.base_fingerprint
        if fp is not None and fp != want:
            raise LatentMismatchError(
                f"channel {self.name!r}: payload from model {str(fp)[:12]}..., but bridge "
                f"{self.options.checkpoint} reads sender {ckpt.sender_model or ckpt.base_model} "
                f"({want[:12]}...) ({ckpt.pair})"
            )


class LatentBridgeChannel(BridgeChecks, LatentCodebookChannel):
    name = "latent-bridge"
    description = (
        "A trained cross-model bridge: sender states -> normalizer -> resampler -> k receiver embeddings "
        "after a primer (continuous packet through any codec, or codebook indices)."
    )
    Options = LatentBridgeOptions
    requires = Requirement.WHITE_BOX_ANY_MODEL
    cross_model = True

    def __init__(self, **options: object) -> None:
        LatentChannel.__init__(self, **options)
        if not self.options.checkpoint:
            raise ChannelError(
                f"channel {self.name!r} needs option checkpoint=DIR or checkpoint=NAME (a trained bridge)"
            )
        self.runner = CodecRunner(load_checkpoint(resolve(self.options.checkpoint)))
        spec = self.runner.spec
        self.discrete = spec.kind == "codebook"
        if self.discrete:
            if "codec" in self.options.model_fields_set and self.options.codec != "index":
                raise ChannelError(
                    f"{self.options.checkpoint} is a discrete bridge: it sends {spec.symbols_per_message} "
                    f"codebook indices (codec 'index'), not {self.options.codec!r}"
                )
            self.codec = IndexCodec(spec.codebook_size)

    # -- send ------------------------------------------------------------------------
    def payloads(self, ctxs: Sequence[AgentContext]) -> list[np.ndarray]:
        if self.discrete:
            return LatentCodebookChannel.payloads(self, ctxs)
        return self.packets(ctxs)

    def apply_control(self, ctxs: Sequence[AgentContext], arrays: list[np.ndarray]) -> list[np.ndarray]:
        if self.discrete:
            return LatentCodebookChannel.apply_control(self, ctxs, arrays)
        return LatentChannel.apply_control(self, ctxs, arrays)

    # -- receive ---------------------------------------------------------------------
    def decode(self, ctx: AgentContext, msg: Message) -> np.ndarray:
        spec = self.runner.spec
        self.check_origin(msg)
        shape = (spec.symbols_per_message,) if self.discrete else (spec.k, spec.m)
        got = str((msg.meta or {}).get("shape", ""))
        if got != "x".join(map(str, shape)):
            raise LatentMismatchError(
                f"channel {self.name!r}: bridge {self.options.checkpoint} takes packets of shape "
                f"{'x'.join(map(str, shape))} ({'indices' if self.discrete else 'k x m floats'}), got {got!r}"
            )
        return super().decode(ctx, msg)

    def condition(self, ctx: AgentContext, payload: Any) -> Conditioning:
        if self.discrete:
            return LatentCodebookChannel.condition(self, ctx, payload)
        return LatentPrefixChannel.condition(self, ctx, payload)
