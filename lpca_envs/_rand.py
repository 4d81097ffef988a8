"""The task generators' draws, made exactly as `random.Random`'s methods make them, faster.

A seed must keep giving the same task, so a generator may only change *how* it calls the
rng, never which integers it draws. In CPython every integer draw of ``choice``,
``randrange``, ``randint``, ``shuffle`` and ``sample`` goes through ``rng._randbelow(n)``
(``getrandbits`` rejection sampling, or the ``random()`` one for a subclass that overrides
only ``random``). The generators call ``below = rng._randbelow`` directly:

- ``rng.choice(seq)``       is ``seq[below(len(seq))]``
- ``rng.randrange(n)``      is ``below(n)``                   (n > 0)
- ``rng.randint(a, b)``     is ``a + below(b - a + 1)``       (a <= b)
- ``rng.shuffle(x)``        is `shuffle(below, x)`
- ``rng.sample(pop, k)``    is `sample(below, pop, k)`

which skips two or three Python frames per draw and ``sample``'s ``Sequence`` check.
tests/test_family_fingerprints.py checks each equivalence against the running CPython's
own methods, and its per-family digests of seeds 0..199 pin the tasks themselves.
"""

from __future__ import annotations

from collections.abc import Callable, MutableSequence, Sequence
from math import ceil, log
from typing import TypeVar

T = TypeVar("T")

Below = Callable[[int], int]


def shuffle(below: Below, x: MutableSequence[object]) -> None:
    """``rng.shuffle(x)`` with ``below = rng._randbelow``."""
    for i in reversed(range(1, len(x))):
        j = below(i + 1)
        x[i], x[j] = x[j], x[i]


def sample(below: Below, population: Sequence[T], k: int) -> list[T]:
    """``rng.sample(population, k)`` with ``below = rng._randbelow`` (0 <= k <= n)."""
    n = len(population)
    result: list[T] = []
    setsize = 21  # CPython's choice between the pool and the set method
    if k > 5:
        setsize += 4 ** ceil(log(k * 3, 4))
    if n <= setsize:
        pool = list(population)
        for i in range(k):
            j = below(n - i)
            result.append(pool[j])
            pool[j] = pool[n - i - 1]
    else:
        selected: set[int] = set()
        for _ in range(k):
            j = below(n)
            while j in selected:
                j = below(n)
            selected.add(j)
            result.append(population[j])
    return result
