"""PIN relay: A holds a door code of n digits, B must type it.

A carry task like SecretRelay, but what crosses is an ordered string of digits
rather than one word out of a short public list: every position matters, the
secret is several times larger (10 to 20 bits instead of 3 to 9) and its
symbols are not words. It is the second family on which a 135M-parameter model
is a usable agent (SmolLM2 copies a 3-digit code it is told 97% of the time,
and fails every task that needs it to look something up or compute), so
channels and learned codecs can be compared on two kinds of content.

info_bits: the code is uniform over all ``10**n`` digit strings (leading zeros
included), so what must cross is ``n * log2(10)`` bits.

Verifier: the answer's digit runs of length n must be exactly the code (one or
more times, and no other n-digit run), so listing guesses fails. ``score`` is
the fraction of positions right in the answer's first run of n digits (0 when
there is none): partial credit for rate-distortion plots.

| level | digits | chance  | info_bits |
|-------|--------|---------|-----------|
| 0     | 3      | 1/1000  | 9.97      |
| 1     | 4      | 1/10^4  | 13.29     |
| 2     | 6      | 1/10^6  | 19.93     |
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from lpca_envs._records import fast_init
from lpca_envs.messages import Budget
from lpca_envs.task import Task, TaskFamily, Utterance, Verdict

DIGITS = (3, 4, 6)
_RUN = re.compile(r"\d+")
_DIGITS = "0123456789"
_CORRECT = Verdict(True, 1.0, "correct")
_ANSWERERS = ("B",)
_INFO_BITS = {n: n * math.log2(10) for n in DIGITS}
_VIEW_B = {
    n: f"Your partner knows the {n}-digit door code. What is the door code? Reply with the digits only."
    for n in DIGITS
}


@fast_init
@dataclass(frozen=True, slots=True)
class PinVerifier:
    """The answer's n-digit runs must all be the code; score = share of positions right."""

    code: str

    def check(self, answer: str) -> Verdict:
        code = self.code
        if answer == code and code.isascii() and code.isdecimal():
            return _CORRECT  # the answer is exactly the code: one digit run, the code
        runs = [r for r in _RUN.findall(answer) if len(r) == len(code)]
        if runs and set(runs) == {self.code}:
            return Verdict(True, 1.0, "correct")
        if not runs:
            return Verdict(False, 0.0, f"no {len(self.code)}-digit code in the answer")
        first = runs[0]
        score = sum(a == b for a, b in zip(first, self.code)) / len(self.code)
        detail = "wrong code " + ", ".join(sorted(set(runs)))
        return Verdict(False, score, detail)


class PinRelay(TaskFamily):
    name = "PinRelay"
    description = "A holds a door code of 3, 4 or 6 digits; B must type it."
    info_bits_doc = "n*log2(10): n digits, each uniform over 0..9"
    levels = (0, 1, 2)

    def default_budget(self, level: int) -> Budget:
        return Budget(max_rounds=1)

    def sample(self, rng: random.Random, level: int) -> Task:
        n = DIGITS[self.check_level(level)]
        below = rng._randbelow  # rng.choice("0123456789") is "0123456789"[below(10)]
        code = "".join([_DIGITS[below(10)] for _ in range(n)])
        views = {
            "A": f"You know: the door code is {code}.\nYour partner must type it but does not know it.",
            "B": _VIEW_B[n],
        }
        return Task(
            self.name,
            level,
            views,
            _ANSWERERS,
            _INFO_BITS[n],
            PinVerifier(code),
            (Utterance(1, "A", _ANSWERERS, f"code: {code}"),),
            code,
            {"digits": n},
            code,
        )

    def solve(self, task: Task, agent: str, received: Sequence[str], rng: random.Random) -> str:
        n = len(task.state)
        heard = {r for r in _RUN.findall(" ".join(received)) if len(r) == n}
        if len(heard) == 1:
            return heard.pop()
        return "".join(rng.choice("0123456789") for _ in range(n))

    def skyline_answer(self, task: Task) -> str:
        return task.state
