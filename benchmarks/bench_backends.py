"""Backend speed and memory on a zoo model (SmolLM2-135M by default; --model), side by side in one run.

Per backend (torch, mlx): prefill tokens/s, decode tokens/s, batch-8 generation
throughput vs batch-1, the overhead of capture+inject hooks vs a plain forward,
and our `generate` vs the framework's own (`transformers` `generate` /
`mlx_lm.generate`) on the same prompt and token count. Peak RSS of one model
serving two agents vs one agent, each in a fresh subprocess.

Targets: hook overhead <= 10%, wrapper overhead <= 5%, batch-8 >= 4x batch-1,
RSS(two agents) <= 1.2x RSS(one agent).

    python benchmarks/bench_backends.py --backends torch,mlx
    python benchmarks/bench_backends.py --backends torch --model qwen2.5-coder-0.5b
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import lpca_models
from lpca_models import Injection


@dataclass
class Config:
    model: str = "smollm2-135m"
    """Zoo id of the model measured."""
    new_tokens: int = 32
    """Tokens generated per prompt in the decode/batch/wrapper measurements."""
    repeats: int = 5
    """Timed repetitions per figure (the median is reported)."""
    prefill_tokens: int = 256
    """Prompt length for the prefill and hook measurements."""


LONG = "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."
QUESTIONS = [
    "Write a long story about a dragon.",
    "Describe the sea in many words.",
    "Explain photosynthesis at length.",
    "Tell me about the history of Rome.",
    "Write a poem about autumn leaves.",
    "Describe a busy city market.",
    "Explain how a bicycle works in detail.",
    "Write a letter to a friend about a trip.",
]


def median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def framework_generate(b: lpca_models.Backend, prompt: str, n: int) -> Callable[[], object]:
    """The framework's own greedy generation of exactly n tokens on the same prompt."""
    if b.info.framework == "torch":
        import torch

        ids = torch.tensor([b.prompt_ids(prompt)])
        mask = torch.ones_like(ids)

        def run() -> object:
            with torch.inference_mode():
                return b.model.generate(  # type: ignore[attr-defined]
                    ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False
                )

        return run
    import mlx_lm

    def run_mlx() -> object:
        return mlx_lm.generate(b.model, b.tokenizer, prompt=b.prompt_ids(prompt), max_tokens=n)

    return run_mlx


def framework_batch_speedup(b: lpca_models.Backend, prompts: list[str], n: int, repeats: int) -> float:
    """The framework's own batch-8 greedy generation (left-padded) vs its 8 single-prompt runs,
    exactly n tokens each: the batching gain the hardware allows, for comparison with ours."""
    if b.info.framework != "torch":
        return float("nan")  # mlx_lm.generate has no batched form to compare with
    import torch

    ids = [b.prompt_ids(p) for p in prompts]
    pad = b._pad_id  # type: ignore[attr-defined]
    t = max(map(len, ids))
    x = torch.tensor([[pad] * (t - len(i)) + i for i in ids])
    mask = torch.tensor([[0] * (t - len(i)) + [1] * len(i) for i in ids])
    kw = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=pad)

    def singles() -> None:
        with torch.inference_mode():
            for i in ids:
                b.model.generate(
                    torch.tensor([i]), attention_mask=torch.ones(1, len(i), dtype=torch.long), **kw
                )  # type: ignore[attr-defined]

    def batch() -> None:
        with torch.inference_mode():
            b.model.generate(x, attention_mask=mask, **kw)  # type: ignore[attr-defined]

    return median_time(singles, repeats) / median_time(batch, repeats)


def bench(backend: str, cfg: Config) -> dict[str, float]:
    b = lpca_models.load(cfg.model, backend=backend)
    r: dict[str, float] = {}
    ids = (b.tokenize(LONG * 20, add_special_tokens=True) * 2)[: cfg.prefill_tokens]
    t = median_time(lambda: b.forward(ids), cfg.repeats)
    r["prefill_tok_s"] = len(ids) / t
    layer = b.info.n_layers // 2
    vec = b.forward(ids, capture=[layer], positions=[-1]).hidden[layer][0]
    t_hook = median_time(
        lambda: b.forward(ids, capture=[layer], positions=[-1], inject=[Injection(layer, vec)]), cfg.repeats
    )
    r["hook_overhead"] = t_hook / t - 1
    prompt = b.chat([{"role": "user", "content": LONG}])
    gens: list = []
    t_ours = median_time(
        lambda: gens.append(b.generate(prompt, max_new_tokens=cfg.new_tokens)[0]), cfg.repeats
    )
    n_ours = len(gens[-1].token_ids)
    r["decode_tok_s"] = n_ours / t_ours
    t_fw = median_time(framework_generate(b, prompt, n_ours), cfg.repeats)
    r["wrapper_overhead"] = t_ours / t_fw - 1
    prompts = [b.chat([{"role": "user", "content": q}]) for q in QUESTIONS]
    t1 = median_time(lambda: [b.generate(p, max_new_tokens=cfg.new_tokens) for p in prompts], cfg.repeats)
    t8 = median_time(lambda: b.generate(prompts, max_new_tokens=cfg.new_tokens), cfg.repeats)
    made = sum(len(g.token_ids) for g in b.generate(prompts, max_new_tokens=cfg.new_tokens))
    r["batch8_speedup"] = t1 / t8
    r["batch8_tok_s"] = made / t8
    r["batch8_tokens_made"] = made / (len(prompts) * cfg.new_tokens)
    r["framework_batch8_speedup"] = framework_batch_speedup(b, prompts, cfg.new_tokens, cfg.repeats)
    return r


RSS_CHILD = """
import resource, sys, lpca_models
b = lpca_models.load(sys.argv[1], backend=sys.argv[2])
agents = int(sys.argv[3])
for a in range(agents):  # each agent keeps its own conversation; the model is shared
    msgs = [{"role": "system", "content": f"You are agent {a}."}, {"role": "user", "content": "Say hello."}]
    p = b.chat(msgs)
    b.generate(p, max_new_tokens=16)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def peak_rss_mb(backend: str, cfg: Config, agents: int) -> float:
    out = subprocess.run(
        [sys.executable, "-c", RSS_CHILD, cfg.model, backend, str(agents)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default="torch,mlx")
    p.add_argument("--repeats", type=int, default=Config.repeats)
    p.add_argument("--model", default=Config.model, help="zoo id or local model path")
    args = p.parse_args()
    cfg = Config(model=args.model, repeats=args.repeats)
    results = {}
    for backend in args.backends.split(","):
        r = bench(backend, cfg)
        one, two = peak_rss_mb(backend, cfg, 1), peak_rss_mb(backend, cfg, 2)
        r["rss_one_agent_mb"], r["rss_two_agents_mb"], r["rss_ratio"] = one, two, two / one
        results[backend] = r
        print(json.dumps({backend: r}), flush=True)
    print(f"\n| figure | {' | '.join(results)} | target |")
    print("|---|" + "---:|" * len(results) + "---|")
    rows = [
        ("prefill tokens/s", "prefill_tok_s", "{:,.0f}", ""),
        ("decode tokens/s (batch 1)", "decode_tok_s", "{:,.1f}", ""),
        ("batch-8 tokens/s", "batch8_tok_s", "{:,.1f}", ""),
        ("batch-8 speedup vs 8 x batch-1", "batch8_speedup", "{:.2f}x", ">= 4x"),
        ("  share of the 8 x max tokens generated (the rest: early EOS)", "batch8_tokens_made", "{:.0%}", ""),
        (
            "  the framework's own batch-8 speedup, exactly max tokens each",
            "framework_batch8_speedup",
            "{:.2f}x",
            "",
        ),
        ("capture+inject hook overhead", "hook_overhead", "{:+.1%}", "<= 10%"),
        ("our generate vs framework generate", "wrapper_overhead", "{:+.1%}", "<= 5%"),
        ("peak RSS, one agent (MB)", "rss_one_agent_mb", "{:,.0f}", ""),
        ("peak RSS, two agents on one model (MB)", "rss_two_agents_mb", "{:,.0f}", ""),
        ("RSS ratio two/one", "rss_ratio", "{:.2f}x", "<= 1.2x"),
    ]
    for label, key, fmt, target in rows:
        print(f"| {label} | " + " | ".join(fmt.format(results[b][key]) for b in results) + f" | {target} |")


if __name__ == "__main__":
    main()
