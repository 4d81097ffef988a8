"""Training a tuned lens on captured hidden states (torch; the frozen model's norm and head).

Each step draws `batch` positions; for every layer ``l < L`` the translated state
``h + A_l h + b_l`` goes through the model's final norm and LM head and the loss is
``KL(final || lens_l)`` averaged over the batch, summed over layers (each translator only sees
its own layer's loss, so layers backpropagate one at a time: memory stays one layer's logits;
the frozen model's parameters are never given gradients).
Adam with decoupled weight decay pulls the translators towards the identity; fixed seeds and
one thread make a run reproducible bit for bit. (tuned-lens itself uses SGD with Nesterov
momentum over 2^18 tokens per step; the prompt sets here are thousands of positions, where
Adam converges in tens of steps.)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lpca_models.backend import Backend
from lpca_models.split.errors import SplitError
from lpca_models.split.lens import TunedLens, check_hidden


@dataclass(frozen=True)
class LensTraining:
    """How a tuned lens is trained."""

    steps: int = 100
    """Optimizer steps."""
    batch: int = 64
    """Positions per step (every layer sees the same positions)."""
    lr: float = 1e-3
    """Adam learning rate (linearly decayed to 0 over `steps`)."""
    weight_decay: float = 1e-3
    """Decoupled weight decay on the translators (towards the identity lens)."""
    seed: int = 0
    """Seeds the translators' optimizer order and the batch draws."""

    def check(self) -> None:
        if self.steps < 1 or self.batch < 1 or not self.lr > 0 or self.weight_decay < 0:
            raise SplitError(
                f"lens training needs steps >= 1, batch >= 1, lr > 0, weight_decay >= 0; got {self}"
            )


def train_tuned_lens(
    backend: Backend, hidden: np.ndarray, config: LensTraining = LensTraining(), log: Any = None
) -> TunedLens:
    """Train one translator per layer on states ``[N, L+1, d]`` (`Captured.hidden` of the train
    side). Needs a torch backend (its public ``core`` norm and ``head_logits``)."""
    import torch

    config.check()
    core, head = getattr(backend, "core", None), getattr(backend, "head_logits", None)
    if core is None or head is None:
        raise SplitError(
            f"training a tuned lens needs the torch backend (differentiable norm and LM head); "
            f"got {backend.info.framework}: train on torch, then load the checkpoint on any backend"
        )
    n_layers, d = backend.info.n_layers, backend.info.hidden_size
    h = check_hidden(hidden, d, "training hidden states")
    if h.ndim != 3 or h.shape[1] != n_layers + 1 or len(h) == 0:
        raise SplitError(f"training hidden states must be [N>0, {n_layers + 1}, {d}]; got {h.shape}")
    gen = torch.Generator().manual_seed(config.seed)
    weight = [torch.zeros(d, d, requires_grad=True) for _ in range(n_layers)]
    bias = [torch.zeros(d, requires_grad=True) for _ in range(n_layers)]
    opt = torch.optim.AdamW(weight + bias, lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / config.steps)
    states = torch.from_numpy(np.ascontiguousarray(h))
    dtype = next(core.parameters()).dtype

    def lens_logits(x: torch.Tensor) -> torch.Tensor:
        return head(core.norm(x.to(dtype))).float()

    losses = []
    for step in range(config.steps):
        rows = torch.randint(0, len(states), (min(config.batch, len(states)),), generator=gen)
        x = states[rows]
        with torch.no_grad():
            target = torch.log_softmax(lens_logits(x[:, n_layers]), -1)
        total = 0.0
        for layer in range(n_layers):
            t = x[:, layer] + x[:, layer] @ weight[layer].T + bias[layer]
            q = torch.log_softmax(lens_logits(t), -1)
            loss = torch.nn.functional.kl_div(q, target, log_target=True, reduction="batchmean")
            # autograd.grad, not backward: the frozen model's parameters get no .grad and stay untouched
            weight[layer].grad, bias[layer].grad = torch.autograd.grad(loss, [weight[layer], bias[layer]])
            total += float(loss.detach())
        opt.step()
        sched.step()
        losses.append(total / n_layers)
        if log is not None:
            log(step, losses[-1])
    meta = {"training": asdict(config), "positions": len(h), "loss_first": losses[0], "loss_last": losses[-1]}
    return TunedLens(
        backend.info.name,
        backend.info.fingerprint,
        torch.stack(weight).detach().numpy(),
        torch.stack(bias).detach().numpy(),
        meta,
    )
