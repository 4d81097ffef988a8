"""Resume fidelity on SmolLM2: hidden states at a late layer, through a codec and a real TCP round trip,
resumed on the server: next-token KL against the uninterrupted forward."""

import asyncio

import numpy as np
import pytest

import lpca_models
from lpca_protocols import wire

LAYER = 24
#: Codecs with a fidelity requirement (nats); the others are reported (benchmarks/bench_codecs.py plots them).
REQUIRED = {"fp16": 0.01, "q8_0": 0.01}
REPORTED = ["q4_0", "rotq:bits=4"]


@pytest.fixture(scope="module")
def smol():
    try:
        return lpca_models.load("smollm2-135m")
    except lpca_models.ModelError as exc:  # the model package is missing on this machine
        pytest.skip(str(exc))


def kl(p_logits, q_logits):
    p = p_logits.astype(np.float64) - p_logits.max()
    q = q_logits.astype(np.float64) - q_logits.max()
    lp, lq = p - np.log(np.exp(p).sum()), q - np.log(np.exp(q).sum())
    return float((np.exp(lp) * (lp - lq)).sum())


def test_resume_fidelity_through_codecs_and_tcp(smol, record_property):
    prompt = smol.chat([{"role": "user", "content": "Name the capital of France in one word."}])
    ids = smol.tokenize(prompt)
    ref = smol.forward(ids, capture=[LAYER], logits="last")
    hidden = ref.hidden[LAYER]

    async def main():
        server = await wire.WireServer(wire.ResumeService(smol, host="b")).start()
        out = {}
        async with wire.WireClient.for_backend(smol, "127.0.0.1", server.port) as c:
            for spec in [*REQUIRED, *REPORTED]:
                r = await c.resume(hidden, LAYER, codec=spec, want=wire.WANT_LOGITS | wire.WANT_TOP, top_k=1)
                out[spec] = (kl(ref.logits, r.logits), r.payload_bits, int(r.top_ids[0]))
        await server.close()
        return out

    out = asyncio.run(main())
    n = hidden.size
    for spec, (k, bits, top) in out.items():
        record_property(
            spec,
            f"KL={k:.5f} nats, {bits / n:.3f} bits/coord, top1 {'=' if top == ref.logits.argmax() else '!'}",
        )
        same = top == ref.logits.argmax()
        print(f"{spec:14s} KL {k:.5f} nats  {bits / n:6.3f} bits/coord  top-1 same: {same}")
    for spec, limit in REQUIRED.items():
        assert out[spec][0] <= limit, (spec, out[spec])
        assert out[spec][2] == int(ref.logits.argmax())
