"""Users turn their own split-information problem into an env with `custom_env` / `CustomTask`."""

import math
import random

import pytest

import lpca_envs
from lpca_envs import CustomTask, Message, TaskError, Verdict, custom_env, play_episode

COLOURS = ["red", "green", "blue", "amber"]


def views(rng):
    colour = rng.choice(COLOURS)
    return {"A": f"The secret colour is {colour}.", "B": "What is the secret colour?"}, colour


def solve(view, received, rng):
    for text in received:
        for c in COLOURS:
            if c in text:
                return c
    return rng.choice(COLOURS)


def test_custom_env_runs_with_text_messages():
    env = custom_env(
        views, lambda answer, colour: colour in answer.lower(), info_bits=2.0, name="SecretColour"
    )
    obs, _ = env.reset(seed=0)
    env.step({"A": {"message": Message.text("A", "B", obs["A"]["view"])}})
    colour = env.task.state
    _, rew, term, _, infos = env.step({"B": {"answer": f"It is {colour.upper()}."}})
    assert term["B"] and rew["B"] == 1.0 and infos["B"]["verdict"].success
    assert infos["B"]["info_bits"] == 2.0


def test_custom_family_registers_and_plays_scripted():
    fam = CustomTask(
        views,
        lambda a, c: Verdict(c == a.strip().lower(), float(c == a.strip().lower()), ""),
        info_bits=lambda c: math.log2(len(COLOURS)),
        name="SecretColourTest",
        oracle_fn=lambda c: c,
        solve_fn=solve,
        reference_fn=lambda c: c,
    )
    env_id = lpca_envs.register_family(fam)
    assert env_id == "lpca/SecretColourTest-v0" and env_id in lpca_envs.list_envs()
    env = lpca_envs.make(env_id)
    rng = random.Random(0)
    assert all(play_episode(env, "oracle", seed=s, rng=rng).success for s in range(200))
    silent = sum(play_episode(env, "silent", seed=s, rng=rng).success for s in range(400)) / 400
    assert 0.15 < silent < 0.35  # chance is 1/4


@pytest.mark.parametrize(
    "args,match",
    [
        ((lambda rng: "x", lambda a, s: True, 1.0), "views_fn must return"),
        ((lambda rng: {"A": "x"}, lambda a, s: True, 1.0), "at least two agents"),
        ((views, lambda a, s: True, -1.0), "info_bits must be"),
        ((views, "not callable", 1.0), "must be callables"),
    ],
)
def test_bad_custom_tasks(args, match):
    with pytest.raises(TaskError, match=match):
        CustomTask(*args)


def test_check_fn_must_return_bool_or_verdict():
    env = custom_env(views, lambda a, s: "yes", info_bits=2.0)
    env.reset(seed=0)
    with pytest.raises(TaskError, match="bool or a Verdict"):
        env.step({"B": {"answer": "red"}})


def three_views(rng):
    x, y = rng.randint(0, 9), rng.randint(0, 9)
    return {"A": f"x = {x}", "C": f"y = {y}", "B": "What is x + y?"}, x + y


def test_three_agents_each_holding_a_part():
    env = custom_env(
        three_views, lambda a, s: a.strip() == str(s), info_bits=2 * math.log2(10), answerers=["B"]
    )
    assert env.possible_agents == ["A", "C", "B"]
    obs, _ = env.reset(seed=5)
    assert set(obs) == {"A", "B", "C"}
    obs, *_ = env.step(
        {
            "A": {"message": Message.text("A", ("B", "C"), obs["A"]["view"])},
            "C": {"message": Message.text("C", "B", obs["C"]["view"])},
        }
    )
    got = sorted(m.as_text() for m in obs["B"]["inbox"])
    assert [m.as_text() for m in obs["C"]["inbox"]] == [obs["A"]["view"]]
    total = sum(int(t.split("=")[1]) for t in got)
    _, rew, term, _, infos = env.step({"B": {"answer": str(total)}})
    assert rew == {"A": 1.0, "C": 1.0, "B": 1.0} and all(term.values())
    # A's message went to two recipients: counted once on the wire, received by both
    assert infos["A"]["bits_sent"] == 8 * len(obs["A"]["view"])
    assert infos["B"]["bits_received"] == infos["A"]["bits_sent"] + infos["C"]["bits_sent"]
    from pettingzoo.test import parallel_api_test

    parallel_api_test(custom_env(three_views, lambda a, s: a == str(s), info_bits=1.0), num_cycles=20)
