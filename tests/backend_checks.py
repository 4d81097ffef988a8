"""Backend contracts checked the same way on torch and mlx (each test file passes its backend)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from lpca_models import Conditioning, Injection


def assert_injection_fires_once_at_the_prompt_positions(backend: Any, to_numpy: Callable[[Any], Any]) -> None:
    """An injection acts on the prompt pass only (the `Conditioning` contract): it is called once per
    row, with the prompt's states at its positions, and decode steps never call it again."""
    prompt = "hello world"
    ids = backend.prompt_ids(prompt)
    d = backend.info.hidden_size
    seen = []

    def add(h, v):
        seen.append(to_numpy(h))
        return h + v

    for layer in (0, 2):
        ref = backend.forward(ids, capture=[layer], positions=(0, -1))
        seen.clear()
        vec = np.full(d, 0.5, np.float32)
        cond = Conditioning(injections=(Injection(layer, vec, positions=(0, -1), mode=add),))
        out = backend.generate(prompt, cond, max_new_tokens=6)[0]
        assert len(seen) == 1, layer
        np.testing.assert_allclose(seen[0], ref.hidden[layer], atol=1e-5)
        same = Conditioning(injections=(Injection(layer, vec, positions=(0, -1), mode="add"),))
        assert out.token_ids == backend.generate(prompt, same, max_new_tokens=6)[0].token_ids
        seen.clear()
        backend.generate([prompt, "hi"], [cond, cond], max_new_tokens=6)
        assert len(seen) == 2, layer  # once per row's injection
