"""PinRelay: verifier, partial credit, silent floor and info_bits against an independent count."""

import math
import random

import pytest

from lpca_envs import SplitInfoEnv, play_episode
from lpca_envs.families.pin_relay import PinRelay

FAM = PinRelay()


@pytest.mark.parametrize("level,n", [(0, 3), (1, 4), (2, 6)])
def test_code_length_and_info_bits(level, n):
    t = FAM.sample(random.Random(level), level)
    assert len(t.state) == n and t.state.isdigit() and t.reference == t.state
    assert t.info_bits == pytest.approx(n * math.log2(10))
    assert t.state in t.views["A"] and t.state not in t.views["B"]


def test_codes_are_uniform_with_leading_zeros():
    rng = random.Random(0)
    codes = [FAM.sample(rng, 0).state for _ in range(20000)]
    assert len(set(codes)) > 990  # 1000 possible codes, 20 draws each on average
    assert sum(c.startswith("0") for c in codes) / len(codes) == pytest.approx(0.1, abs=0.01)
    firsts = [int(c[0]) for c in codes]
    assert max(firsts.count(d) for d in range(10)) / min(firsts.count(d) for d in range(10)) < 1.15


def test_verifier_and_partial_credit():
    t = FAM.sample(random.Random(0), 1)
    code = t.state
    wrong = code[:-1] + str((int(code[-1]) + 1) % 10)
    assert t.check(code).success
    assert t.check(f"The door code is {code}.").success
    assert t.check(f"{code}, yes {code}").success
    v = t.check(wrong)
    assert not v.success and v.score == pytest.approx(0.75)
    assert not t.check(f"{code} or {wrong}").success  # listing guesses fails
    assert not t.check(code[:-1]).success and t.check(code[:-1]).score == 0.0
    assert not t.check(code + "1").success  # a longer number is not the code
    assert not t.check("").success


@pytest.mark.parametrize("level,bound", [(0, 0.01), (1, 0.002)])
def test_silent_is_chance_and_oracle_is_perfect(level, bound):
    env = SplitInfoEnv(FAM, level)
    rng = random.Random(3)
    assert sum(play_episode(env, "silent", seed=s, rng=rng).success for s in range(500)) / 500 <= bound
    assert all(play_episode(env, "oracle", seed=s, rng=rng).success for s in range(100))
