"""Bad input to the environment: typed errors for caller mistakes, recorded violations for rule breaks.

The split (documented in lpca_envs/env.py): structural mistakes raise and leave
the episode untouched; rule breaks by an agent are dropped and listed in infos.
"""

import pytest

import lpca_envs
from lpca_envs import (
    ActionError,
    ActionTypeError,
    Budget,
    BudgetError,
    EpisodeOverError,
    Message,
    MessageError,
    SplitInfoEnv,
    TaskError,
    UnknownAgentError,
)
from lpca_envs.families.arithmetic import Arithmetic


def fresh(budget=None, level=0):
    env = SplitInfoEnv(Arithmetic(), level, budget)
    env.reset(seed=7)
    return env


def test_step_before_reset_and_after_end():
    env = SplitInfoEnv(Arithmetic(), 0)
    with pytest.raises(EpisodeOverError, match="before reset"):
        env.step({})
    env.reset(seed=0)
    env.step({"B": {"answer": "3"}})
    with pytest.raises(EpisodeOverError, match="after the episode ended"):
        env.step({"B": {"answer": "3"}})


@pytest.mark.parametrize(
    "actions,err,match",
    [
        ({"C": None}, UnknownAgentError, "unknown agent 'C'"),
        (["A"], ActionTypeError, "must be a dict"),
        ({"A": "hello"}, ActionTypeError, "must be a dict with keys"),
        ({"A": {"msg": 1}}, ActionError, "unknown key"),
        ({"A": {"message": b"raw bytes"}}, ActionTypeError, "Message or None"),
        ({"B": {"answer": 42}}, ActionTypeError, "must be a str"),
        (
            {"A": {"message": Message.text("B", "A", "spoof")}},
            ActionError,
            "cannot send a message with sender",
        ),
        ({"A": {"message": Message.text("A", "Z", "hi")}}, UnknownAgentError, "recipient 'Z'"),
        ({"A": {"message": Message.text("A", "A", "hi")}}, ActionError, "to itself"),
    ],
)
def test_malformed_actions_raise_and_leave_the_episode_untouched(actions, err, match):
    env = fresh()
    before = (env.round, list(env.transcript), list(env.agents))
    with pytest.raises(err, match=match):
        env.step(actions)
    assert (env.round, list(env.transcript), list(env.agents)) == before
    # the episode is still usable
    _, rew, term, *_ = env.step({"B": {"answer": env.task.reference}})
    assert term["B"] and rew["B"] == 1.0


def test_errors_are_builtin_subclasses_too():
    assert issubclass(ActionTypeError, TypeError)
    assert issubclass(UnknownAgentError, KeyError)
    assert issubclass(EpisodeOverError, RuntimeError)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"payload": "text"}, "payload must be bytes"),
        ({"payload": b"ab", "bits": 20}, "does not fit a payload of 2 bytes"),
        ({"payload": b"ab", "bits": 8}, "does not fit"),
        ({"payload": b"ab", "bits": 12.0}, "must be an int"),
        ({"payload": b"", "recipients": ()}, "non-empty tuple"),
        ({"payload": b"", "meta": {"k": 1}}, "str to str"),
        ({"payload": b"", "meta": {"k": "x" * 300}}, "longer than"),
    ],
)
def test_bad_messages(kwargs, match):
    args = {"sender": "A", "recipients": ("B",), "payload": b""} | kwargs
    with pytest.raises(MessageError, match=match):
        Message(**args)


def test_packed_bits_are_exact():
    m = Message("A", "B", b"\x01\x02", kind="codebook", bits=12)
    assert m.bits == 12 and m.recipients == ("B",)
    assert Message("A", ("B",), b"abc").bits == 24


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_rounds": -1},
        {"max_rounds": 1.5},
        {"max_bits_per_message": -8},
        {"max_bits_per_episode": "x"},
    ],
)
def test_bad_budget(kwargs):
    with pytest.raises(BudgetError):
        Budget(**kwargs)


def test_over_budget_message_is_dropped_and_recorded():
    env = fresh(Budget(max_bits_per_message=16, max_rounds=2))
    obs, _, _, _, infos = env.step({"A": {"message": Message.text("A", "B", "too long")}})
    assert obs["B"]["inbox"] == ()
    (v,) = infos["A"]["violations"]
    assert v.kind == "message_over_budget" and "64 bits exceeds the 16-bit cap" in v.detail
    assert infos["A"]["bits_sent"] == 0 and env.transcript == []
    obs, _, _, _, infos = env.step({"A": {"message": Message.text("A", "B", "ok")}})
    assert [m.as_text() for m in obs["B"]["inbox"]] == ["ok"] and infos["A"]["bits_sent"] == 16


def test_episode_budget_is_shared_and_enforced():
    env = fresh(Budget(max_bits_per_episode=24, max_rounds=3))
    _, _, _, _, infos = env.step({"A": {"message": Message.text("A", "B", "ab")}})
    assert infos["A"]["budget_left_bits"] == 8
    _, _, _, _, infos = env.step({"B": {"message": Message.text("B", "A", "cd")}})
    assert infos["B"]["violations"][0].kind == "episode_budget_exceeded"
    assert infos["B"]["budget_left_bits"] == 8


def test_messages_after_the_last_round_are_violations():
    env = fresh(Budget(max_rounds=1))
    env.step({})
    _, _, term, trunc, infos = env.step({"A": {"message": Message.text("A", "B", "late")}})
    assert infos["A"]["violations"][0].kind == "rounds_exhausted"
    assert trunc["A"] and not term["A"] and env.agents == []


def test_answer_rules():
    env = fresh()
    _, rew, term, _, infos = env.step({"A": {"answer": "5"}})
    assert infos["A"]["violations"][0].kind == "not_an_answerer" and not term["A"]
    _, rew, term, _, infos = env.step({"B": {"answer": "x" * 5000}})
    assert infos["B"]["violations"][0].kind == "answer_too_long"
    assert term["B"] and rew["B"] == 0.0 and not infos["B"]["verdict"].success


def test_empty_answer_means_no_answer_and_truncation_gives_zero():
    env = fresh(Budget(max_rounds=2))
    for _ in range(2):
        _, rew, term, trunc, _ = env.step({"B": {"answer": ""}})
        assert not term["B"] and not trunc["B"]
    _, rew, term, trunc, infos = env.step({"B": None})
    assert trunc == {"A": True, "B": True} and rew == {"A": 0.0, "B": 0.0}
    assert "verdict" not in infos["B"]


def test_bad_env_construction():
    with pytest.raises(TaskError, match="level must be one of"):
        lpca_envs.make("lpca/Arithmetic-v0", level=7)
    with pytest.raises(TaskError, match="budget must be"):
        lpca_envs.make("lpca/Arithmetic-v0", budget={"max_rounds": 2})
    with pytest.raises(TaskError, match="render_mode"):
        lpca_envs.make("lpca/Arithmetic-v0", render_mode="rgb_array")
    with pytest.raises(TaskError, match="options\\['task'\\]"):
        lpca_envs.make("lpca/Arithmetic-v0").reset(options={"task": "not a task"})


def test_pinned_task_replays_the_same_episode():
    env = lpca_envs.make("lpca/Arithmetic-v0", level=2)
    env.reset(seed=3)
    task = env.task
    obs, _ = lpca_envs.make("lpca/Arithmetic-v0", level=2).reset(options={"task": task})
    assert obs["B"]["view"] == task.views["B"]
