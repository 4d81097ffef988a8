"""KVLookup family: silent floor, two-way oracle, verifier, info_bits by an independent count."""

import math
import random
import re
import string
from collections import Counter

import pytest

from lpca_envs import SplitInfoEnv, play_episode
from lpca_envs.families import kv_lookup
from lpca_envs.families.kv_lookup import KVLookup

FAM = KVLookup()
N_VALUES = {0: 8, 1: 16, 2: 32}


@pytest.mark.parametrize("level", FAM.levels)
def test_silent_stays_near_chance(level):
    # Silent B guesses uniformly over V, so it wins with p = 1/|V| (1/8, 1/16, 1/32).
    # Allow 4.5 standard deviations of a binomial(500, p) either side.
    env = SplitInfoEnv(FAM, level)
    rng = random.Random(1)
    n = 500
    wins = sum(play_episode(env, "silent", seed=s, rng=rng).success for s in range(n))
    p = 1 / N_VALUES[level]
    sd = math.sqrt(p * (1 - p) / n)
    assert abs(wins / n - p) <= 4.5 * sd, (wins, n, p)


@pytest.mark.parametrize("level", FAM.levels)
def test_oracle_and_skyline_always_succeed(level):
    env = SplitInfoEnv(FAM, level)
    assert env.budget.max_rounds == 2
    for s in range(500):
        r = play_episode(env, "oracle", seed=s)
        assert r.success and not r.violations, s
        assert r.rounds == 3  # two message rounds, then B answers
        task = env.task
        assert r.bits == sum(8 * len(u.text.encode()) for u in task.oracle)
        assert [(u.round, u.sender) for u in task.oracle] == [(1, "B"), (2, "A")]
    for s in range(100):
        assert play_episode(env, "skyline", seed=s).success


def test_verifier_accepts_format_variants_and_rejects_wrong():
    task = FAM.sample(random.Random(3), 1)
    st = task.state
    who, pet = st.people[st.query], task.reference
    other = next(v for v in st.vocab if v != pet)
    variants = (pet, f" {pet}.", f"The answer is {pet}", f"**{pet.upper()}**", f"{who} = {pet}",
                f"Answer: {pet.capitalize()}\n", f"{who}'s pet is a {pet}!")  # fmt: skip
    for ok in variants:
        assert task.check(ok).success, ok
    for bad in (other, "", "no idea", f"{pet} or {other}", f"{pet}zz", "unicorn"):
        v = task.check(bad)
        assert not v.success and v.score == 0.0 and v.detail, bad
    assert "ambiguous" in task.check(f"{pet} or {other}").detail


def test_solve_reads_only_its_key_from_what_arrived():
    rng = random.Random(0)
    for _ in range(200):
        task = FAM.sample(rng, 2)
        st = task.state
        who = st.people[st.query]
        # A one-way dump of the whole table (A's own view) must also work.
        assert FAM.solve(task, "B", [task.views["A"]], rng) == task.reference
        heard = f"{who.lower()}: {task.reference.upper()}"
        assert FAM.solve(task, "B", [heard], rng) == task.reference
    # Another person's pet is not taken as ours.
    task = FAM.sample(random.Random(5), 0)
    st = task.state
    i = (st.query + 1) % len(st.people)
    wrong = next(v for v in st.vocab if v != task.reference)
    msg = f"{st.people[i]} = {wrong}"
    guesses = Counter(FAM.solve(task, "B", [msg], random.Random(s)) for s in range(400))
    assert len(guesses) == len(st.vocab)  # it fell back to guessing over all of V


@pytest.mark.parametrize("level", FAM.levels)
def test_info_bits_matches_independent_count(level):
    # What crosses two-way is (which of the k keys, its value): count the distinct pairs
    # the generator produces and their empirical entropy; both must give info_bits.
    rng = random.Random(0)
    n = 20000
    pairs = Counter()
    for _ in range(n):
        t = FAM.sample(rng, level)
        pairs[(t.state.query, t.reference)] += 1
    assert len(pairs) == round(2**t.info_bits)
    h = -sum(c / n * math.log2(c / n) for c in pairs.values())
    assert abs(h - t.info_bits) < 0.05, (h, t.info_bits)
    assert t.info_bits == t.info_detail["two_way"]


def test_one_way_matches_distinct_tables():
    # One-way, A must convey the whole table: count the distinct tables at level 0.
    rng = random.Random(0)
    tables = set()
    for _ in range(60000):
        t = FAM.sample(rng, 0)
        tables.add(t.state.pets)
    assert len(tables) == round(2 ** t.info_detail["one_way"]) == 8**4
    assert t.info_detail["one_way"] > t.info_detail["two_way"]


def test_generator_is_deterministic_per_seed():
    for level in FAM.levels:
        a = [FAM.sample(random.Random(s), level) for s in range(20)]
        b = [FAM.sample(random.Random(s), level) for s in range(20)]
        key = lambda t: (t.task_id, t.views, t.state)  # noqa: E731
        assert [key(t) for t in a] == [key(t) for t in b]
        assert len({t.task_id for t in a}) == 20


@pytest.mark.parametrize("level", FAM.levels)
def test_communication_is_necessary(level):
    # B's view must say nothing about the pet: no candidate word appears in it (the answer
    # space is named, "the animal", not listed), so B's view alone is at chance. A's view must not say
    # which person B needs: each person appears exactly once, as a table row.
    rng = random.Random(7)
    printable = set(string.printable)
    assert not {p.lower() for p in kv_lookup._PEOPLE} & set(kv_lookup._PETS)
    for _ in range(500):
        t = FAM.sample(rng, level)
        st = t.state
        assert set(t.views["A"]) <= printable and set(t.views["B"]) <= printable
        assert len(set(st.people)) == len(st.people) == t.info_detail["keys"]
        b_words = Counter(re.findall(r"[a-z]+", t.views["B"].lower()))
        assert all(b_words[v] == 0 for v in st.vocab), t.views["B"]
        for p in st.people:
            assert len(re.findall(rf"\b{p}\b", t.views["A"])) == 1
            assert re.search(rf"^{p} has an? [a-z]+\.$", t.views["A"], re.M)
        assert "need the pet of:" not in t.views["A"]
