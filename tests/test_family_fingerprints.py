"""Seeds keep giving the same tasks, steps and scripted episodes (issue 18's speed-ups).

The digests below were recorded from the code before issue 18 (commit 232e96e): a sha256
per (family, level) over what seeds 0..199 produce (views, reference, info_bits, the oracle
lines, info_detail, task_id), over 3 x 50 scripted episodes (oracle, silent, skyline:
outcome, bits, rounds, violations, every delivered payload, the verdict), over tasks drawn
from a `random.Random` subclass, and over every output of reset and step (observations,
rewards, terminations, truncations, infos) under random and oracle actions; one more over
budgeted episodes that break every rule. A faster generator, env or scripted agent must
reproduce them exactly. The rest checks the pieces the speed-ups rest on against what they
replace: `lpca_envs._rand` against `random.Random`'s own methods, `play_episode` against
`ScriptedAgent`, `fast_init` records against the dataclass-generated ``__init__``, and the
verifiers' fast paths against their general ones.
"""

import dataclasses
import hashlib
import inspect
import random

import pytest

import lpca_envs
from lpca_envs import Message, Task, Utterance, Verdict, _rand
from lpca_envs.answers import parse_assignment, parse_choice
from lpca_envs.families import BUILTIN_FAMILIES
from lpca_envs.families.pin_relay import PinVerifier

SEEDS = range(200)
EXPECTED_VIOLATIONS = "8c3298a927f30390799db38cb129ad252cd5a4f13fed80724adf5981589a15d5"
EPISODE_SEEDS = range(50)

# (family, level) -> digests of (tasks, scripted episodes, tasks from a random() subclass,
# reset/step outputs), recorded from commit 232e96e with the functions below.
EXPECTED = {
    ("Arithmetic", 0): (
        "7bb371252745413bfbdc81ca8e5156cb9d01efc1713c93bf4e232affabd84873",
        "8f25c9dff5668f932b8941ac07a3be5e65cb8e4ab7522c2b5c6a5407c898c40f",
        "a880e7cb6ac56af3b56b4d4b01e393cf0e7951ebd75e96f28237b696134a1236",
        "a58374669339a27337f4669e5372002b207dd1e520ca2089adfbd18f2132c382",
    ),
    ("Arithmetic", 1): (
        "9754d264742e3550fcb50eb27e38e16735b173175a8800232b79ae38fec38f41",
        "d436ae82730d5475f5a4bf968c38f93e88adb4964e8d5ce494d02083e949b4aa",
        "5e2ba784ccfe98a04f0bbb099983132a4da5c1a9dd2a640da35097f6d85b7b9c",
        "9d6f763eced9488cd888baea4d8bbf6954ed0daa8a79af18844de378d2b30be7",
    ),
    ("Arithmetic", 2): (
        "be67e93e9e25688b9e1abb85aacbe848f43a6d3464a162a87c6d692f09321683",
        "b765fceee8078198dc8a8cd8ab5fff40aed7d9845a2c798f531f2772c9f31bca",
        "76b696cd32ba19ce968106c4759ce4136e04d80f70c0bdd8c4740972703daae6",
        "fc226834fee18f6575bb0a4e563edb5bf39fac177a5650ea72887d9e4ebcc4f5",
    ),
    ("KVLookup", 0): (
        "d90f481631dd05658ff4075b4d36b14557ceec8df306b289d2afeabedd38a067",
        "83f55da2eaae492f60d68ec10b0b2e7bf08519ad1df7909152716d9832e27687",
        "4160109ac1ac875838864e031c3455560bbde90c84f88aee53cbbb53179b1aaa",
        "8b408b8af2c2f1785d32b50fa758f157a2fd2dd41114dfb2e1bc607d5564945d",
    ),
    ("KVLookup", 1): (
        "61a1d2a007b7cf58244b82303606d3bdec94f3b53e10ce2bd2744ec0e6f7fe11",
        "eab13ab86e4fbcb351acecdae1b1e8915c7c1738935d511d3e93fd51f5e00228",
        "6532513203cda328dbda1f48d0b5c4da069f9c5297686eaf1a72de4561f27042",
        "0767bb1da6f858869f70a7c08c1ea49238fafb76a8f8ab9da2a67a95d6da790f",
    ),
    ("KVLookup", 2): (
        "affd610b9fdf93bbd3dc5098a96fc353a9c67718e3db7b165bf21c444c084978",
        "ee6b376c7f4dc35c96e638fdf9c37c33604dd3db302ab1ca5c70ea69a8718445",
        "e4ef4ddaac47b72f7e56795ddf9411d195206fe10bdb5c2a3f1d3dda60c468c2",
        "e8e42ff3be2fc5c8daf9095306c22e40efdaa5a04a201d378e65e905d4523c7c",
    ),
    ("ConstraintSatisfaction", 0): (
        "d6712eb92564c4f616387a029af318c742385c0fba87fde76b58d8ccaf6e1884",
        "b23fdba4a0e32dbe0c15af984da6d766bb5c5ddb2218da40ffda26c8975e475f",
        "dc2c76c40c6903b7f0fafd84e3ce3e5df0517b29c89b30a380b0dcf263da0100",
        "a73a24f609badaa7b2e44b7092460ebe16313252259b755fe1b1172027dce59e",
    ),
    ("ConstraintSatisfaction", 1): (
        "03518d5e358e7b48248f3b3cc9f28c922bebe3a078bd2980fb08710a54956bea",
        "17797d4ce2a0c6956f99ed5954f9f2d59d8ea88f272badaedb083025a41bcde2",
        "c75bddc204c93dfacd7e0183b69e7164253711cd0a3030eb3b9e22d75fc9542f",
        "c112946c55ff656390b2df8e239a716beac23346695cc26a1787f76bd1f14cbc",
    ),
    ("ConstraintSatisfaction", 2): (
        "e733d10b81e3f0c08c017be62e7d919f04c4f7a68d6ec105593e8b084028dcff",
        "fdb27bfc6a387181f9b72c9c88555955356f390bdfb036461369bf134de3d1d7",
        "4aee2143f217e173763fd59591821b36076babd0fdedbb17d7e0a6e79df07404",
        "0666b68ec38a6f105fac9fe0961618a04c77feb6887e45f353d6ff44cfa30123",
    ),
    ("GraphPath", 0): (
        "4ae6aff15d582f65ebc6435912fe5e329b1dc35dcabc695bc4f0494401b2f20e",
        "25902e6fabf6f81984ad63bc5b2475666fabc1d24acba3a64f09630a7f8bde62",
        "2d0d52efc59cf1d01c34fc08aa7f5fb7f5b2c9f610d3dd4ce48c0a3b6ba3ba65",
        "c6fa512debb037fec6fe705ee86fd4f7fef3512bbea8a6223123cf5a23a4e93a",
    ),
    ("GraphPath", 1): (
        "d7349b871f492a9f79b05a40c5136bd464a6bc2e261c0a4395b10c6e9ea900a3",
        "a7066a5becb6d2c74f2561b00b779344b07f49c4497836bae2dab9209779abd3",
        "727ea1769965a795ac91cef7b9d9d4573c23a573d6d1dc247318dd70d0c0bf8b",
        "0964e078cf4cf66b654299dcd8e6b4ed55c0414b269c680ddac44b8dc50dc404",
    ),
    ("GraphPath", 2): (
        "373dff7d59875e685b691070e01e4f226a4befb01223c49f0e39a8e1b8743e05",
        "cb18ba057cebb2b1b3459ad50bc5ea7ff702d2a4d430ec2609b9974b5fdc2788",
        "68781a8bdf376e7fca49e5a9241f2a8c7715bfdda090a4c69e62e4960e7cef29",
        "82adaf0b14a9b3d983a92c18ec1665bedcdf57387771aabcd5ab0274e8e4fa3d",
    ),
    ("ProgramSynthesis", 0): (
        "40ae91cba34b4c51d3c137a40caa32ea241f989820cc3a2286767acf480f80f2",
        "5d5e3b65b8bec8a080bcc7926694d2df905f7bc3673dd41e6788f823fe859a33",
        "8ba7a9b4d5a1562f62a8b8944ef6fd962a0471f88e3d015d8d6bdcecec91d707",
        "58728cd812e4e1d6b276bc2483740b100540020eca582ce4b6a4da0755bd17f1",
    ),
    ("ProgramSynthesis", 1): (
        "05afc21ff40467b680fd8bbe49f3389bc1f7d6bbd65e3f01b0da64678c56fddf",
        "d2eee76652969a7f60666aafc0d4dba98a310211324b182bd552c42a35018d18",
        "b4ad9491d35d01447b08d9d805774db24a2a9eefa634ee9ad6b25cc2bfe5256c",
        "a0b5d71d3001a066a5a8fd850aac14d8987e59dc36dee33444934e1b9d8f4ef6",
    ),
    ("ProgramSynthesis", 2): (
        "9868aceb7d6506501da58bce5c9a676769bff9fd1a68d41f439b15d8f9f34a3c",
        "df7742d1051c8a082de0665f14105aa3d0391c8cf14006c9a8b5025799e91928",
        "851029ea35d445f277c410fda571c0703b6a8109fe8e6e806b0f80a91308f098",
        "3b601cf1b9cd024816a7509c8b21218b69c09266d11dfdec11a93e7e033cd395",
    ),
    ("SecretRelay", 0): (
        "99e611e099b7a1c418d6914d660f73296c0fb5a9f356448e8d7495ca7d773689",
        "b4f3c30fe313812f28a9df7337befc241d8179e37b21c596720665013a9f5b3d",
        "bc6fc299d6fdfd508fec66f473912b7e4e1fd1211aab3d24c9599d3272367c0a",
        "aaaa79ce65c502aa8b5906ff40d25cc939141a72ef2908bec5fe944f0e03b860",
    ),
    ("SecretRelay", 1): (
        "9ca4848b61a8a59dd793a5cd24a42d69fcb48aab81f13ff97cc24b3595dc24e7",
        "4ad0b0457dce4b3276cf1998c72c656df8b7d3038829a4707e87b2afc7197280",
        "3254baa6aef009f9061d1ef29a722e1aa71b1db6176885c873683383b4af6510",
        "61aa5f943f7ba1d3aab261f6e90a3be2cf0ae45e4934c6c8a15503404e4788d4",
    ),
    ("SecretRelay", 2): (
        "050c4d3da0c0cfe3b1b5abd79e9850f6499ac490c3f93743ce42dff8cc24307f",
        "791d8b7b574daf21ebbcee6e9de11f52f377d4a39f323b7f944805d109f5f9fc",
        "bd57b41cc1bd124ff508814ab1dd21d75e496144530858f787fc4a5f9813ab12",
        "9e75526152d28bbba891edb91a7dbe7ab7a3c4fe50e0ce0a2a6d5e2b3d4cb761",
    ),
    ("PinRelay", 0): (
        "af346ccaed5fb37d278a74752bc65eec8a8aa59bc5b932bbf45866413038f106",
        "9f8c8289913169a5fcfb85b00b3eb86670d12f4c8dc8d2e538e440a146c041ef",
        "bb60037fd350094f6342fb3a0904c123d7ba4a44bca786576a95e4fa90b1d6a6",
        "8b28c94d28558e3bca0873307d1e4fe63d6ab3cf8662dc541f92f5b84e256c55",
    ),
    ("PinRelay", 1): (
        "17b6ff05e0114426bc41c83546784a191e7b3daeb5e99a86d5c3e6f2403163fe",
        "b1d3c71bb84c011d2116ce6065567e1d5d9aa4259cb4bb775f28a11cb57b1b71",
        "9d51eba14bc96284556cb39e0ee9ab33a9ca2121c439055e8a2b6a6b2cca57ef",
        "936645dbc4ffdf7a9811f0e1e8a2765c41220870669f3a96bcf86143aaa900da",
    ),
    ("PinRelay", 2): (
        "a20f31c766df248354434b84141b58e1b713132aadcc2e49898348aa14563893",
        "26763ccba936e485a44f5826c3ed06575d330fa3d6ba821e430107c8227d36bd",
        "9aa0aea926af4819cb2ab0baa43c20b81e41a5f213f174aae52e743498b7b085",
        "70a2cbf22fc012f6cb6113a2cb65681515fcfab6ea2620009d44bcf085769b5b",
    ),
}


def _num(x):
    return f"{float(x):.9f}"  # 9 decimals: a last-ulp libm difference cannot flip a digest


def task_digest(env_id, level):
    env = lpca_envs.make(env_id, level=level)
    h = hashlib.sha256()
    for seed in SEEDS:
        env.reset(seed=seed)
        t = env.task
        h.update(
            repr(
                (
                    sorted(t.views.items()),
                    t.reference,
                    _num(t.info_bits),
                    [(u.round, u.sender, tuple(u.recipients), u.text) for u in t.oracle],
                    sorted((k, _num(v)) for k, v in t.info_detail.items()),
                    t.task_id,
                    t.answerers,
                )
            ).encode()
        )
    return h.hexdigest()


class _OwnRandom(random.Random):
    """A subclass that overrides random() only: CPython then draws its integers from random()."""

    def random(self):
        return super().random()


def subclass_digest(env_id, level):
    """Tasks drawn from a random.Random subclass (its choice/sample/... use the other draw)."""
    family = lpca_envs.get_family(env_id)
    h = hashlib.sha256()
    for seed in EPISODE_SEEDS:
        t = family.sample(_OwnRandom(seed), level)
        h.update(repr((sorted(t.views.items()), t.reference, _num(t.info_bits), t.task_id)).encode())
    return h.hexdigest()


def episode_digest(env_id, level):
    env = lpca_envs.make(env_id, level=level)
    h = hashlib.sha256()
    for kind in lpca_envs.SCRIPTED_KINDS:
        rng = random.Random(1)
        for seed in EPISODE_SEEDS:
            r = lpca_envs.play_episode(env, kind, seed=seed, rng=rng)
            delivered = [
                (d.round, d.message.sender, d.message.recipients, d.message.payload) for d in env.transcript
            ]
            verdict = env.verdict
            h.update(
                repr(
                    (
                        kind,
                        r.task_id,
                        r.success,
                        _num(r.score),
                        r.bits,
                        r.rounds,
                        [(v.agent, v.round, v.kind) for v in r.violations],
                        delivered,
                        None if verdict is None else (verdict.success, verdict.detail),
                    )
                ).encode()
            )
    return h.hexdigest()


def _plain(x):
    """Step outputs as plain, comparable data (dict key order kept; floats to 9 decimals)."""
    if isinstance(x, float):
        return _num(x)
    if isinstance(x, dict):
        return [(k, _plain(v)) for k, v in x.items()]
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if isinstance(x, Message):
        return ("Message", x.sender, x.recipients, x.payload, x.kind, x.bits, dict(x.meta))
    if isinstance(x, Verdict):
        return ("Verdict", x.success, _num(x.score), x.detail)
    if isinstance(x, lpca_envs.Violation):
        return ("Violation", x.agent, x.round, x.kind, x.detail)
    return x


def _random_action(pick, env, agent):
    """None, {}, a message to some of the others, an answer (empty, the reference, wrong,
    too long), or both; drawn from `pick` (a random.Random: stable across library versions)."""
    u = pick.random()
    if u < 0.1:
        return None
    act = {}
    if u < 0.6:
        others = [b for b in env.possible_agents if b != agent]
        to = tuple(pick.sample(others, pick.randint(1, len(others))))
        act["message"] = Message.text(
            agent, to, "".join(pick.choice("ab c=1;") for _ in range(pick.randint(0, 12)))
        )
    v = pick.random()
    if v < 0.25:
        act["answer"] = ""
    elif v < 0.4:
        act["answer"] = "7" * pick.randint(1, 20)
    elif v < 0.55:
        act["answer"] = env.task.reference
    elif v < 0.7:
        act["answer"] = "x"
    return act


def step_digest(env_id, level):
    """Every output of reset and step: random actions (late messages, answers from
    non-answerers, wrong answers...) and oracle agents."""
    env = lpca_envs.make(env_id, level=level)
    h = hashlib.sha256()
    for seed in range(20):
        out = [env.reset(seed=seed)]
        pick = random.Random(seed)
        while env.agents:
            out.append(env.step({a: _random_action(pick, env, a) for a in env.agents}))
        h.update(repr(_plain(out)).encode())
    for seed in range(10):
        obs, infos = env.reset(seed=seed)
        out = [(obs, infos)]
        agents = [lpca_envs.ScriptedAgent(a, "oracle", env.family) for a in env.possible_agents]
        for ag in agents:
            ag.reset(env.task)
        while env.agents:
            step = env.step({ag.name: ag.act(obs[ag.name]) for ag in agents})
            obs = step[0]
            out.append(step)
        h.update(repr((_plain(out), env.render())).encode())
    return h.hexdigest()


CELLS = [(f"lpca/{f.name}-v0", level) for f in BUILTIN_FAMILIES for level in f.levels]


def violations_digest():
    """Tight budgets and two answerers: every kind of violation, under random actions."""
    from lpca_envs import Budget, SplitInfoEnv

    h = hashlib.sha256()
    budget = Budget(max_bits_per_message=48, max_bits_per_episode=96, max_rounds=3)
    envs = [
        SplitInfoEnv(lpca_envs.get_family("lpca/Arithmetic-v0"), 1, budget, max_answer_chars=12),
        lpca_envs.custom_env(
            lambda rng: {a: f"{a} holds {rng.randint(0, 9)}" for a in ("A", "B", "C")},
            lambda answer, views: answer.strip() == views["A"][-1],
            3.3,
            answerers=("B", "C"),
            budget=Budget(max_bits_per_message=40, max_rounds=2),
        ),
    ]
    kinds = set()
    for env in envs:
        for seed in range(60):
            out = [env.reset(seed=seed)]
            pick = random.Random(seed)
            while env.agents:
                out.append(env.step({a: _random_action(pick, env, a) for a in env.agents}))
            kinds.update(v.kind for v in env.violations)
            h.update(repr(_plain(out)).encode())
    return h.hexdigest(), kinds


def test_violations_are_the_recorded_ones():
    digest, kinds = violations_digest()
    assert kinds == {
        "message_over_budget",
        "episode_budget_exceeded",
        "rounds_exhausted",
        "not_an_answerer",
        "already_answered",
        "answer_too_long",
    }
    assert digest == EXPECTED_VIOLATIONS


def test_every_builtin_family_and_level_is_pinned():
    assert sorted(EXPECTED) == sorted((env_id.split("/")[1][:-3], lv) for env_id, lv in CELLS)


@pytest.mark.parametrize("env_id,level", CELLS)
def test_seeds_give_the_recorded_tasks_and_episodes(env_id, level):
    name = env_id.split("/")[1][:-3]
    tasks, episodes, subclass, steps = EXPECTED[(name, level)]
    assert task_digest(env_id, level) == tasks
    assert episode_digest(env_id, level) == episodes
    assert subclass_digest(env_id, level) == subclass
    assert step_digest(env_id, level) == steps


@pytest.mark.parametrize("family", BUILTIN_FAMILIES, ids=lambda f: f.name)
def test_play_episode_plays_what_scripted_agents_play(family):
    """play_episode unrolls ScriptedAgent: the same actions, hence the same episodes."""
    env = lpca_envs.make(f"lpca/{family.name}-v0", level=family.levels[-1])
    for kind in lpca_envs.SCRIPTED_KINDS:
        rng_a, rng_b = random.Random(5), random.Random(5)
        for seed in range(30):
            r = lpca_envs.play_episode(env, kind, seed=seed, rng=rng_a)
            played = (list(env.transcript), env.verdict, list(env.violations), env.round)
            obs, _ = env.reset(seed=seed)
            agents = [lpca_envs.ScriptedAgent(a, kind, family, rng_b) for a in env.possible_agents]
            for ag in agents:
                ag.reset(env.task)
            while env.agents:
                obs, *_ = env.step({ag.name: ag.act(obs[ag.name]) for ag in agents})
            assert played == (list(env.transcript), env.verdict, list(env.violations), env.round)
            assert r.bits == env.episode_bits and r.task_id == env.task.task_id


# -- the draws: lpca_envs._rand and rng._randbelow against random.Random's methods ---------------


@pytest.mark.parametrize(
    "population,k",
    [
        ("abcdfghkmnpqrstuvwxyz", 2),  # Arithmetic's names: the pool method
        ("abcdfghkmnpqrstuvwxyz", 5),
        (tuple(range(40)), 4),  # KVLookup's people: the set method
        (tuple(range(30)), 5),  # GraphPath's towns
        (range(10), 5),  # GraphPath's proposals (levels 1-2) sample a range
        (range(66), 9),  # k > 5: the bigger set size
        (range(28), 12),
        (tuple(range(7)), 7),
        (tuple(range(7)), 0),
    ],
)
def test_sample_draws_what_random_sample_draws(population, k):
    for seed in range(300):
        a, b = random.Random(seed), random.Random(seed)
        assert _rand.sample(a._randbelow, population, k) == b.sample(population, k)
        assert a.getstate() == b.getstate()


def test_shuffle_choice_randint_randrange_through_randbelow():
    for seed in range(300):
        a, b = random.Random(seed), random.Random(seed)
        xs, ys = list(range(seed % 9)), list(range(seed % 9))
        _rand.shuffle(a._randbelow, xs)
        b.shuffle(ys)
        assert xs == ys
        below = a._randbelow
        for n in (1, 2, 3, 7, 10, 21, 64):
            assert "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvw"[:n][
                below(n)
            ] == b.choice("0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvw"[:n])
            assert 1 + below(n) == b.randint(1, n)
            assert below(n) == b.randrange(n)
        assert a.getstate() == b.getstate()


def test_a_plain_random_subclass_draws_the_same_tasks():
    plain = type("Plain", (random.Random,), {})
    for family in BUILTIN_FAMILIES:
        for seed in range(20):
            a = family.sample(plain(seed), 0)
            b = family.sample(random.Random(seed), 0)
            assert (a.views, a.reference, a.task_id) == (b.views, b.reference, b.task_id)


# -- fast_init records --------------------------------------------------------------------------


def test_fast_init_records_keep_signature_defaults_and_dataclass_behaviour():
    views = {"A": "a view", "B": "b view"}
    t = Task("F", 0, views, ("B",), 1.0, None, (Utterance(1, "A", ("B",), "hi"),), "x")
    assert t.info_detail == {} and t.state is None and t.oracle_rounds == 1
    assert Task("F", 0, views, ("B",), 1.0, None, (), "x").info_detail is not t.info_detail
    assert t == Task(**{f.name: getattr(t, f.name) for f in dataclasses.fields(t) if f.init})
    assert dataclasses.replace(t, reference="y").reference == "y"
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.reference = "z"  # type: ignore[misc]
    assert list(inspect.signature(Task).parameters) == [f.name for f in dataclasses.fields(Task) if f.init]
    assert Verdict(True, 1.0) == Verdict(True, 1.0, "")
    with pytest.raises(TypeError):
        Verdict(True)  # type: ignore[call-arg]


def test_task_id_is_the_streamed_blake2b_of_the_views():
    def streamed(family, level, views):
        h = hashlib.blake2b(digest_size=8)
        h.update(family.encode())
        h.update(str(level).encode())
        for agent in sorted(views):
            h.update(b"\x00" + agent.encode() + b"\x01" + views[agent].encode())
        return f"{family}/{level}/{h.hexdigest()}"

    for views in (
        {"A": "x", "B": "y"},
        {"B": "y", "A": "x"},
        {"A": "é ☃", "B": ""},
        {"A": "1", "B": "2", "C": "3"},
        {"Zed": "1", "Amy": "2"},
    ):
        t = Task("Fam", 2, views, ("B",) if "B" in views else ("Amy",), 1.0, None, (), "r")
        assert t.task_id == streamed("Fam", 2, views)


def test_message_text_builds_the_message_the_constructor_builds():
    for sender, recipients, text in (
        ("A", ("B",), "hi"),
        ("A", ("B", "C"), ""),
        ("A", "B", "é"),
        ("A", ["B"], "list recipients"),
    ):
        m = Message.text(sender, recipients, text)
        assert m == Message(sender, recipients, text.encode()) and repr(m) == repr(
            Message(sender, recipients, text.encode())
        )
        assert m.bits == 8 * len(text.encode()) and m.meta == {}
    assert Message.text("A", ("B",), "x", codec="c").meta == {"codec": "c"}
    for bad in ((("",), "x"), ((), "x"), (("B", 3), "x")):
        with pytest.raises(lpca_envs.MessageError):
            Message.text("A", *bad)
    with pytest.raises(lpca_envs.MessageError):
        Message.text("", ("B",), "x")


# -- verifier fast paths -------------------------------------------------------------------------


def _choice_general(answer, choices):
    import re

    words = set(re.findall(r"[a-z][a-z_-]*", answer.lower()))
    hits = words & choices
    return hits.pop() if len(hits) == 1 else None


@pytest.mark.parametrize("answer", ["cat", "Cat", "cat.", "dog", "ca t", "cat-dog", "çat", "x_y", "owl"])
def test_parse_choice_fast_path_agrees_with_the_regex(answer):
    choices = frozenset({"cat", "dog", "owl", "x_y", "Cat", "cat-dog"})
    assert parse_choice(answer, choices)[0] == _choice_general(answer, choices)


@pytest.mark.parametrize(
    "code,answer",
    [
        ("123", "123"),
        ("123", "1234"),
        ("123", "124"),
        ("007", "007"),
        ("12a", "12a"),
        ("١٢٣", "١٢٣"),  # Arabic-Indic digits: \d matches them, the fast path leaves them alone
        ("123", " 123"),
    ],
)
def test_pin_verifier_fast_path_agrees_with_the_runs(code, answer):
    v = PinVerifier(code).check(answer)
    runs = [r for r in __import__("re").findall(r"\d+", answer) if len(r) == len(code)]
    assert v.success == bool(runs and set(runs) == {code})


def test_parse_assignment_is_unchanged_on_odd_inputs():
    names = ("x", "y", "z")
    assert parse_assignment("x=1, y=2, z=3", names) == ({"x": 1, "y": 2, "z": 3}, "")
    assert parse_assignment("X = 1; y: 2 and z is −3", names) == ({"x": 1, "y": 2, "z": -3}, "")
    assert parse_assignment("x=1, y=2", names)[0] is None
    assert parse_assignment("x=1, x=2, y=2, z=0", names)[1].startswith("ambiguous")
    assert parse_assignment("x=1, y=2, z=3", ["x", "y", "z"]) == ({"x": 1, "y": 2, "z": 3}, "")
