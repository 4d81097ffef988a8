"""The training-time quantizers of a codebook codec, one interface over vector-quantize-pytorch.

    quant = make_quantizer(spec, commitment=0.25)
    quant.init(packets, generator)            # k-means init on [N, k, m] packets (vq, rvq)
    q, aux = quant(packet)                    # [B, k, m] straight-through, aux = commitment loss
    net.load_quantizer(quant.export())        # the tables inference reads (`packet_codec.quantize`)

`vq`: `VectorQuantize` with one codebook per slot (heads = k), EMA updates. `rvq`: one
`ResidualVQ` of Q stages per slot. `fsq`: one `FSQ` (its input/output projections are
trained by the optimizer) shared by the slots. Every k-means init is Lloyd's algorithm
seeded by farthest points on the packets of many episodes (the library's own init sees
one batch, which rarely holds every message); rvq initializes stage q on the residuals
left by stages < q.
"""

from __future__ import annotations

from typing import Any

from lpca_protocols.packet_codec._spec import CodecSpec

DECAY = 0.95


class TrainQuantizer:
    """A quantizer being trained; `module` is its torch module (state, parameters, train/eval)."""

    def __init__(self, spec: CodecSpec, commitment: float) -> None:
        import torch
        import vector_quantize_pytorch as vqp

        self.torch, self.spec = torch, spec
        common = dict(
            codebook_size=spec.codebook_size,
            decay=DECAY,
            rotation_trick=False,
            kmeans_init=True,
            kmeans_iters=10,
            commitment_weight=commitment,
        )
        if spec.quantizer == "vq":
            self.module = vqp.VectorQuantize(  # one codebook per slot: heads = slots
                dim=spec.k * spec.m,
                codebook_dim=spec.m,
                heads=spec.k,
                separate_codebook_per_head=True,
                **common,
            )
        elif spec.quantizer == "rvq":
            self.module = torch.nn.ModuleList(
                vqp.ResidualVQ(dim=spec.m, num_quantizers=spec.rvq_levels, **common) for _ in range(spec.k)
            )
        else:
            self.module = vqp.FSQ(levels=list(spec.fsq_levels), dim=spec.m)

    # -- codebooks -------------------------------------------------------------------------
    def _books(self) -> list[Any]:
        """The `EuclideanCodebook`s, slot-major (rvq: slot j's stages in order)."""
        if self.spec.quantizer == "vq":
            return [self.module._codebook]
        if self.spec.quantizer == "rvq":
            return [layer._codebook for rvq in self.module for layer in rvq.layers]
        return []

    @property
    def initted(self) -> bool:
        return all(bool(b.initted) for b in self._books())

    def init(self, packets: Any, g: Any) -> None:
        """k-means init of every codebook on `packets` [N, k, m] (no-op for fsq)."""
        torch, s = self.torch, self.spec
        if s.quantizer == "fsq":
            return
        with torch.no_grad():
            if s.quantizer == "vq":
                cb = torch.stack([kmeans(packets[:, j], s.codebook_size, g) for j in range(s.k)])
                _set(self.module._codebook, cb)  # [k, K, m]: one codebook per head
                return
            for j, rvq in enumerate(self.module):
                residual = packets[:, j].clone()
                for layer in rvq.layers:
                    cent = kmeans(residual, s.codebook_size, g)
                    _set(layer._codebook, cent[None])
                    residual = residual - cent[torch.cdist(residual, cent).argmin(1)]

    # -- forward ---------------------------------------------------------------------------
    def __call__(self, packet: Any) -> tuple[Any, Any]:
        """Straight-through quantized packets [B, k, m] and the auxiliary (commitment) loss."""
        torch, s = self.torch, self.spec
        b = packet.shape[0]
        if s.quantizer == "vq":
            q, _, commit = self.module(packet.reshape(b, 1, -1))
            return q.view_as(packet), commit.sum()
        if s.quantizer == "rvq":
            outs, loss = [], packet.new_zeros(())
            for j, rvq in enumerate(self.module):
                q, _, losses = rvq(packet[:, j : j + 1])
                outs.append(q)
                loss = loss + losses.sum()
            return torch.cat(outs, 1), loss
        q, _ = self.module(packet)
        return q, packet.new_zeros(())

    def parameters(self) -> list[Any]:
        """Parameters the optimizer trains (fsq projections; vq/rvq codebooks follow by EMA)."""
        if self.spec.quantizer != "fsq":
            return []
        return [p for p in self.module.parameters() if p.requires_grad]

    def export(self) -> dict[str, Any]:
        """The tables `PacketNet` and `CodecRunner` quantize with (float32 tensors, by weight name)."""
        torch, s = self.torch, self.spec
        with torch.no_grad():
            if s.quantizer == "vq":
                return {"codebook": self.module.codebook.detach().clone()}  # [k, K, m]
            if s.quantizer == "rvq":
                return {"codebook": torch.stack([rvq.codebooks for rvq in self.module]).detach().clone()}
            n = len(s.fsq_levels)
            f = self.module
            if f.has_projections:
                w_in, b_in = f.project_in.weight, f.project_in.bias
                w_out, b_out = f.project_out.weight, f.project_out.bias
            else:  # m == len(levels): the library skips the projections
                w_in = w_out = torch.eye(n)
                b_in = b_out = torch.zeros(n)
            return {
                "fsq.w_in": w_in.detach().clone(),
                "fsq.b_in": b_in.detach().clone(),
                "fsq.w_out": w_out.detach().clone(),
                "fsq.b_out": b_out.detach().clone(),
            }


def make_quantizer(spec: CodecSpec, commitment: float) -> TrainQuantizer:
    return TrainQuantizer(spec, commitment)


def _set(book: Any, cb: Any) -> None:
    book.embed.copy_(cb)
    book.embed_avg.copy_(cb)
    book.cluster_size.fill_(1.0)
    book.initted.fill_(True)


def kmeans(x: Any, size: int, g: Any, iters: int = 25) -> Any:
    """Lloyd's k-means of rows `x` [n, m] into `size` centroids, seeded by farthest-point init
    (every well-separated cluster gets a centroid; a random init can merge two for good)."""
    import torch

    c = [x[int(torch.randint(len(x), (1,), generator=g))]]
    dist = torch.cdist(x, c[0][None])[:, 0]
    for _ in range(size - 1):
        c.append(x[int(dist.argmax())])
        dist = torch.minimum(dist, torch.cdist(x, c[-1][None])[:, 0])
    cent = torch.stack(c).clone()
    for _ in range(iters):
        a = torch.cdist(x, cent).argmin(1)
        for j in range(size):
            sel = a == j
            if sel.any():
                cent[j] = x[sel].mean(0)
    return cent
