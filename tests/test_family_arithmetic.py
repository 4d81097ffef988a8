"""Arithmetic family: verifier tolerance, silent floor, info_bits against an independent count."""

import math
import random

import pytest

from lpca_envs import SplitInfoEnv, play_episode
from lpca_envs.families.arithmetic import Arithmetic

FAM = Arithmetic()


@pytest.mark.parametrize("level", FAM.levels)
def test_silent_stays_near_chance(level):
    # B guesses A's operands uniformly; success needs every guessed operand to give
    # the right value, so chance is at most 1/R for R values (level 0: 1/10).
    env = SplitInfoEnv(FAM, level)
    rng = random.Random(1)
    wins = sum(play_episode(env, "silent", seed=s, rng=rng).success for s in range(500))
    bound = {0: 0.16, 1: 0.10, 2: 0.03}[level]
    assert wins / 500 <= bound


def test_verifier_accepts_format_variants_and_rejects_wrong():
    task = FAM.sample(random.Random(3), 0)
    ans = int(task.reference)
    for ok in (f"{ans}", f" {ans}.", f"The answer is {ans}", f"**{ans}**", f"Answer: {ans}\n"):
        assert task.check(ok).success, ok
    for bad in (str(ans + 1), "", "no idea", f"{ans} or {ans + 1}", f"{ans}0"):
        v = task.check(bad)
        assert not v.success and v.score == 0.0, bad


@pytest.mark.parametrize("level", [0, 1])
def test_info_bits_matches_independent_count(level):
    # Count the distinct tuples of A's operand values the generator produces: it
    # must equal 2**info_bits (R**m equally likely tuples).
    rng = random.Random(0)
    seen = set()
    for _ in range(20000):
        t = FAM.sample(rng, level)
        seen.add(tuple(v for _, v in t.state.a_values))
    assert len(seen) == round(2**t.info_bits)
    assert math.isclose(
        t.info_bits,
        t.info_detail["operands_from_A"] * math.log2(t.info_detail["values_per_operand"]),
    )
