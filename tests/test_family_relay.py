"""SecretRelay: verifier, silent floor and info_bits against an independent count."""

import random

import pytest

from lpca_envs import SplitInfoEnv, play_episode
from lpca_envs.families.relay import SecretRelay

FAM = SecretRelay()


@pytest.mark.parametrize("level,bound", [(0, 0.18), (1, 0.04), (2, 0.01)])
def test_silent_is_chance(level, bound):
    env = SplitInfoEnv(FAM, level)
    rng = random.Random(2)
    assert sum(play_episode(env, "silent", seed=s, rng=rng).success for s in range(500)) / 500 <= bound


def test_verifier():
    t = FAM.sample(random.Random(0), 1)
    colour, animal = (w for _, w in t.state)
    assert t.check(f"{colour} {animal}").success
    assert t.check(f"The secret colour is {colour.upper()} and the animal is a {animal}.").success
    assert not t.check(colour).success
    other = next(c for c in ("red", "green") if c != colour)
    assert not t.check(f"{colour} or {other}, {animal}").success
    assert not t.check("").success


def test_info_bits_counts_distinct_secrets():
    rng = random.Random(0)
    seen = {tuple(FAM.sample(rng, 1).state) for _ in range(5000)}
    assert len(seen) == 2 ** FAM.sample(rng, 1).info_bits == 64
