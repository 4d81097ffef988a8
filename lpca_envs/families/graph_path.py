"""Shortest path over a road map split between two agents.

A and B each know some of the roads (undirected edges) of one map of named towns;
no road is known to both. B is asked for the length (number of roads) of a shortest
route from town s to town t over all the roads. A is not told s and t.

Generator: town names are a random sample of a fixed pool; s and t are the first
two of them (the names are random, so this loses nothing). B's ``m_B`` roads are a
uniform ``m_B``-subset of the ``P_all = n(n-1)/2`` town pairs and A's ``m_A`` roads
a uniform ``m_A``-subset of the ``P = P_all - m_B`` pairs left (one ``rng.sample``
of ``m_B + m_A`` pairs). A target answer is drawn uniformly from ``1..d_max`` first
and proposals are redrawn until the instance is accepted:

- the union distance ``d`` equals the target, so every value in ``1..d_max`` is
  equally likely and no fixed guess beats ``1/d_max`` (the natural distribution
  piles up on 2);
- ``d`` is shorter than B's own distance ``d_B`` (inf when B alone cannot connect
  s and t), so every shortest route uses one of A's roads: communication is needed;
- B's view does not determine ``d``: another A-road set, one swap away, is
  accepted with the same B view and a different answer (for ``d > 1`` put the
  road s-t in place of any of A's roads; for ``d = 1`` a swap that gives
  ``2 <= d' < d_B`` is searched for, else the proposal is rejected; this also
  rejects every ``d_B = 2``).

info_bits: ``log2 C(P, m_A)``, the entropy of A's road set given B's view (towns,
B's roads, s, t) under the proposal distribution, in which it is uniform over the
``m_A``-subsets of the ``P`` pairs B does not hold. A does not know s, t or B's
roads and any of its roads could lie on the route, so a one-way message must
identify the whole set. The acceptance step conditions this distribution on the
answer; the conditioned entropy is at most this value (acceptance keeps a subset
of the same support) and has no closed form, so the proposal entropy is what is
reported: an exact property of the generator and an upper bound of the
conditioned one (level 0, enumerated: 5.54 conditioned vs 5.81 bits).
``info_detail["answer_bits"]`` is ``log2`` of the number of answers B's own view
leaves open: the size of the answer alone, for comparison, not a floor for this
one-way task.

Level 0 is small enough (2,520 road splits) to enumerate once: it samples the same
distribution from a table of accepted instances instead of redrawing proposals.

Silent B (nothing received) guesses uniformly among ``{1..d_max}`` below ``d_B``;
that set always has at least two members (accepted instances have ``d_B >= 3``).
At level 0 B's two roads never join s and t, so its chance is exactly 1/3 (the
Bayes-optimal silent guess, computed from the level-0 table, reaches 0.39).

| level | towns | B's roads | A's roads | answer range | info_bits | silent chance |
|-------|-------|-----------|-----------|--------------|-----------|---------------|
| 0     | 5     | 2         | 3         | 1..3         | 5.81      | 1/3           |
| 1     | 8     | 4         | 5         | 1..4         | 15.38     | ~0.26         |
| 2     | 12    | 7         | 7         | 1..5         | 28.35     | ~0.21         |
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

from lpca_envs import _rand
from lpca_envs._records import fast_init
from lpca_envs.answers import IntVerifier
from lpca_envs.messages import Budget
from lpca_envs.task import Task, TaskFamily, Utterance

# Letters only (no spaces or hyphens) so "Town-Town" parses unambiguously.
_TOWNS = (
    "Accra", "Athens", "Berlin", "Bern", "Bogota", "Cairo", "Dakar", "Delhi", "Doha",
    "Dublin", "Hanoi", "Havana", "Kyiv", "Lima", "Lisbon", "Madrid", "Manila", "Minsk",
    "Nairobi", "Oslo", "Ottawa", "Paris", "Prague", "Quito", "Riga", "Rome", "Seoul",
    "Sofia", "Tokyo", "Vienna",
)  # fmt: skip
_ROAD = re.compile(r"([A-Za-z]+)\s*(?:<->|<-|->|--|-|\bto\b)\s*([A-Za-z]+)")
_INF = 1 << 30


@dataclass(frozen=True, slots=True)
class _Level:
    n: int
    m_b: int
    m_a: int
    d_max: int


_LEVELS = {0: _Level(5, 2, 3, 3), 1: _Level(8, 4, 5, 4), 2: _Level(12, 7, 7, 5)}
# Level-constant tables. Pair 0 is (0, 1), the road s-t.
_PAIRS = {lv: tuple(combinations(range(sp.n), 2)) for lv, sp in _LEVELS.items()}
# pair index -> (i, bit of j, j, bit of i), for building adjacency bitmasks
_PAIR_BITS = {lv: tuple((i, 1 << j, j, 1 << i) for i, j in ps) for lv, ps in _PAIRS.items()}
# Levels whose (B roads, A roads) space is at most this large are enumerated once and
# then sampled from a table (same distribution as the rejection loop, much faster).
_TABLE_LIMIT = 20_000
_Entry = tuple[tuple[int, ...], tuple[int, ...], int, int]  # B roads, A roads, d, d_B
_TABLES: dict[int, dict[int, list[_Entry]] | None] = {}


def _dist01(adj: list[int]) -> int:
    """BFS distance from node 0 to node 1 over adjacency bitmasks (_INF if unreachable)."""
    seen = frontier = 1
    d = 0
    while frontier:
        if frontier & 2:
            return d
        d += 1
        nxt = 0
        while frontier:
            low = frontier & -frontier
            nxt |= adj[low.bit_length() - 1]
            frontier ^= low
        frontier = nxt & ~seen
        seen |= nxt
    return _INF


def _adjacency(n: int, pair_bits: tuple, idx: Sequence[int]) -> list[int]:
    adj = [0] * n
    for p in idx:
        i, bj, j, bi = pair_bits[p]
        adj[i] |= bj
        adj[j] |= bi
    return adj


def _has_witness(level: int, eb: Sequence[int], ea: Sequence[int], d_b: int) -> bool:
    """For d = 1: is there a one-swap A-road set with 2 <= d' < d_B, d' <= d_max?"""
    if d_b < 3:
        return False
    spec, pair_bits = _LEVELS[level], _PAIR_BITS[level]
    base = _adjacency(spec.n, pair_bits, [*eb, *(p for p in ea if p != 0)])
    used = set(eb) | set(ea)
    hi = min(d_b - 1, spec.d_max)
    for f in range(1, len(pair_bits)):
        if f in used:
            continue
        i, bj, j, bi = pair_bits[f]
        adj = base.copy()
        adj[i] |= bj
        adj[j] |= bi
        if 2 <= _dist01(adj) <= hi:
            return True
    return False


def _evaluate(level: int, eb: Sequence[int], ea: Sequence[int], target: int = 0) -> tuple[int, int] | None:
    """(answer d, B's own distance d_B) if the instance is accepted, else None.

    With a `target`, also None unless d == target (checked early, for speed).
    """
    spec, pair_bits = _LEVELS[level], _PAIR_BITS[level]
    adj = _adjacency(spec.n, pair_bits, eb)
    d_b = _dist01(adj)
    if d_b < 3 or d_b <= target:  # d_B = 2 forces d = 1: B's view would decide it
        return None
    for p in ea:
        i, bj, j, bi = pair_bits[p]
        adj[i] |= bj
        adj[j] |= bi
    d = _dist01(adj)
    if d >= d_b or d > spec.d_max or (target and d != target):
        return None
    if d == 1 and not _has_witness(level, eb, ea, d_b):
        return None
    return d, d_b


def _propose(rng: random.Random, level: int) -> tuple[list[int], list[int]]:
    """B's and A's road sets as pair indices: B uniform, then A uniform among the rest."""
    spec = _LEVELS[level]
    drawn = _rand.sample(rng._randbelow, range(len(_PAIRS[level])), spec.m_b + spec.m_a)
    return drawn[: spec.m_b], drawn[spec.m_b :]


def _table(level: int) -> dict[int, list[_Entry]] | None:
    """Every accepted (B roads, A roads) of a small level, grouped by answer."""
    if level in _TABLES:
        return _TABLES[level]
    spec = _LEVELS[level]
    n_pairs = len(_PAIRS[level])
    if math.comb(n_pairs, spec.m_b) * math.comb(n_pairs - spec.m_b, spec.m_a) > _TABLE_LIMIT:
        _TABLES[level] = None
        return None
    table: dict[int, list[_Entry]] = {d: [] for d in range(1, spec.d_max + 1)}
    for eb in combinations(range(n_pairs), spec.m_b):
        rest = [p for p in range(n_pairs) if p not in eb]
        for ea in combinations(rest, spec.m_a):
            res = _evaluate(level, eb, ea)
            if res is not None:
                table[res[0]].append((eb, ea, *res))
    _TABLES[level] = table
    return table


def _draw(rng: random.Random, level: int) -> tuple[Sequence[int], Sequence[int], int, int]:
    """Accepted (B roads, A roads, answer, d_B): answer uniform, then a uniform accepted
    instance with that answer (from the table, or by redrawing proposals)."""
    below = rng._randbelow  # rng.randint(1, d) is 1 + below(d), rng.choice(s) s[below(len(s))]
    target = 1 + below(_LEVELS[level].d_max)
    table = _TABLES[level] if level in _TABLES else _table(level)
    if table is not None:
        entries = table[target]
        return entries[below(len(entries))]
    while True:
        eb, ea = _propose(rng, level)
        res = _evaluate(level, eb, ea, target)
        if res is not None:
            return eb, ea, res[0], res[1]


def _bfs(roads: Sequence[tuple[str, str]], s: str, t: str) -> int | None:
    """Plain BFS over named roads (independent of the bitmask one); None if unreachable."""
    nbrs: dict[str, list[str]] = {}
    for a, b in roads:
        na = nbrs.get(a)
        if na is None:
            nbrs[a] = [b]
        else:
            na.append(b)
        nb = nbrs.get(b)
        if nb is None:
            nbrs[b] = [a]
        else:
            nb.append(a)
    dist = {s: 0}
    queue = [s]
    for u in queue:
        if u == t:
            return dist[u]
        for v in nbrs.get(u, ()):
            if v not in dist:
                dist[v] = dist[u] + 1
                queue.append(v)
    return None


@fast_init
@dataclass(frozen=True, slots=True)
class GraphPathState:
    towns: tuple[str, ...]  # sorted
    a_roads: tuple[tuple[str, str], ...]  # A's private data
    b_roads: tuple[tuple[str, str], ...]  # B's private data
    source: str
    target: str
    n_a_roads: int
    d_max: int


def _fmt(roads: Sequence[tuple[str, str]]) -> str:
    return ", ".join([f"{a}-{b}" for a, b in roads])


_ANSWERERS = ("B",)
# info_bits per level: log2 C(P, m_A), P the pairs B does not hold (no draw changes it)
_INFO_BITS = {lv: math.log2(math.comb(len(_PAIRS[lv]) - sp.m_b, sp.m_a)) for lv, sp in _LEVELS.items()}
# The fixed pieces of the views per level, around A's roads, B's roads and "s to t".
_TEXTS = {
    lv: (
        f"You know these {sp.m_a} roads: ",
        ".\nYour partner knows the other roads and must find the fewest roads on a route "
        "between two towns that you are not told.",
        f"You know these {sp.m_b} roads: ",
        f".\nYour partner knows {sp.m_a} other roads.\n"
        "Question: using all the roads (yours and your partner's), what is the fewest "
        "number of roads on a route from ",
        "? Every shortest route uses at "
        f"least one of your partner's roads. The answer is between 1 and {sp.d_max}.\n"
        "Answer with one integer.",
    )
    for lv, sp in _LEVELS.items()
}


class GraphPath(TaskFamily):
    name = "GraphPath"
    description = "A and B each hold some roads of a map; B answers the shortest s-t route length."
    info_bits_doc = "log2 C(P, m_A): A's m_A roads, uniform among the P town pairs B does not hold"
    levels = (0, 1, 2)

    def default_budget(self, level: int) -> Budget:
        return Budget(max_rounds=1)

    def sample(self, rng: random.Random, level: int) -> Task:
        spec = _LEVELS[self.check_level(level)]
        names = _rand.sample(rng._randbelow, _TOWNS, spec.n)  # rng.sample(_TOWNS, n)
        eb, ea, d, d_b = _draw(rng, level)
        pairs = _PAIRS[level]
        b_roads = []
        for p in eb:
            i, j = pairs[p]
            u, v = names[i], names[j]
            b_roads.append((u, v) if u < v else (v, u))
        b_roads.sort()
        a_roads = []
        for p in ea:
            i, j = pairs[p]
            u, v = names[i], names[j]
            a_roads.append((u, v) if u < v else (v, u))
        a_roads.sort()
        s, t = names[0], names[1]
        towns = tuple(sorted(names))
        intro = (
            f"You and your partner each know some of the roads of a map of {spec.n} towns: "
            f"{', '.join(towns)}. Each road joins two towns and can be used both ways; "
            "no road is known to both of you.\n"
        )
        a_text = _fmt(a_roads)  # the oracle message: A's whole road set
        texts = _TEXTS[level]
        views = {
            "A": f"{intro}{texts[0]}{a_text}{texts[1]}",
            "B": f"{intro}{texts[2]}{_fmt(b_roads)}{texts[3]}{s} to {t}{texts[4]}",
        }
        n_pairs = len(pairs) - spec.m_b
        n_candidates = min(spec.d_max, d_b - 1)
        return Task(
            self.name,
            level,
            views,
            _ANSWERERS,
            _INFO_BITS[level],
            IntVerifier(d),
            (Utterance(1, "A", _ANSWERERS, a_text),),
            str(d),
            {
                "pairs_not_held_by_B": n_pairs,
                "roads_of_A": spec.m_a,
                "answer_bits": math.log2(n_candidates),
            },
            GraphPathState(towns, tuple(a_roads), tuple(b_roads), s, t, spec.m_a, spec.d_max),
        )

    def solve(self, task: Task, agent: str, received: Sequence[str], rng: random.Random) -> str:
        st: GraphPathState = task.state
        known = {}
        for name in st.towns:
            known[name.lower()] = name
        own = set(st.b_roads)
        got: set[tuple[str, str]] = set()
        for text in received:
            for a, b in _ROAD.findall(text):
                u, v = known.get(a.lower()), known.get(b.lower())
                if u and v and u != v:
                    road = (u, v) if u < v else (v, u)
                    if road not in own:
                        got.add(road)
        if got:
            # (a BFS distance does not depend on the order of the roads: no need to sort)
            d = _bfs(st.b_roads + tuple(got), st.source, st.target)
            if d is not None and d <= st.d_max:
                return str(d)
        # Nothing usable received: uniform over the answers B's own view allows
        # (1..d_max, and shorter than B's own route since one of A's roads is on it).
        d_own = _bfs(st.b_roads, st.source, st.target)
        hi = st.d_max if d_own is None else min(st.d_max, d_own - 1)
        return str(rng.randint(1, max(hi, 1)))

    def skyline_answer(self, task: Task) -> str:
        st: GraphPathState = task.state
        d = _bfs(st.a_roads + st.b_roads, st.source, st.target)
        return "unreachable" if d is None else str(d)
