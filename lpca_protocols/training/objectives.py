"""The optional training terms of `ObjectiveConfig` that need more than one line (torch tensors)."""

from __future__ import annotations

from typing import Any


def teacher_kl(logits: Any, tmask: Any, data: dict[str, Any], idx: Any) -> Any:
    """Mean over answer positions of KL(teacher || receiver), the teacher renormalized over its
    stored top tokens (the receiver's mass outside them only raises the loss)."""
    import torch.nn.functional as F

    g = logits.shape[1]
    t_lp = F.log_softmax(data["teacher_logp"][idx, :g].float(), -1)  # [B, G, TOPK]
    s_lp = F.log_softmax(logits, -1).gather(-1, data["teacher_ids"][idx, :g])
    return (t_lp.exp() * (t_lp - s_lp)).sum(-1)[tmask].mean()


def infonce(packet: Any, data: dict[str, Any], idx: Any, temperature: float) -> Any:
    """Supervised InfoNCE over the batch: a packet's positives are the packets of episodes with
    the same teacher answer, its negatives every other packet (rows without a positive skip)."""
    import torch
    import torch.nn.functional as F

    tgt = data["target"][idx]
    same = (tgt[:, None] == tgt[None]).all(-1)
    eye = torch.eye(len(idx), dtype=torch.bool)
    z = F.normalize(packet.flatten(1), dim=-1)
    sim = (z @ z.T / temperature).masked_fill(eye, float("-inf"))
    pos = same & ~eye
    rows = pos.any(1)
    if not rows.any():
        return sim.new_zeros(())
    num = torch.logsumexp(sim.masked_fill(~pos, float("-inf")), 1)
    return (torch.logsumexp(sim, 1) - num)[rows].mean()


def answer_probe(probe: Any, table: Any, packet: Any, data: dict[str, Any], idx: Any) -> Any:
    """Cross-entropy of the teacher's answer tokens read straight off the packet: a linear map to
    one vector per answer position, scored against the receiver's (frozen) input-embedding table.

    A direct signal that the packet must hold the answer. It matters when answers rarely repeat
    within a batch (an n-digit code: 10**n answers), where the supervised InfoNCE has no positives
    and the task loss alone, through the frozen receiver, starts very slowly.
    """
    import torch
    import torch.nn.functional as F

    tgt = data["target"][idx]  # [B, G]
    tmask = torch.arange(tgt.shape[1])[None] < data["target_len"][idx][:, None]
    vecs = probe(packet.flatten(1)).view(len(idx), tgt.shape[1], table.shape[1])
    return F.cross_entropy((vecs @ table.T)[tmask], tgt[tmask])
