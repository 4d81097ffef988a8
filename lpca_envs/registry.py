"""Environment ids: ``lpca/<Name>-v<N>`` in PettingZoo's parallel registry, mirrored here."""

from __future__ import annotations

import functools
from typing import Any

import pettingzoo

from lpca_envs.env import SplitInfoEnv
from lpca_envs.errors import TaskError, UnknownEnvError
from lpca_envs.task import TaskFamily

_FAMILIES: dict[str, TaskFamily] = {}


def register_family(
    family: TaskFamily, version: int = 0, *, env_id: str | None = None, **defaults: Any
) -> str:
    """Register `family` as ``lpca/<family.name>-v<version>`` (or `env_id`) and return the id.

    The id works with both `lpca_envs.make` and ``pettingzoo.make("parallel", id)``.
    `defaults` become the env's default keyword arguments (``level``, ``budget``...).
    """
    if not isinstance(family, TaskFamily):
        raise TaskError(f"register_family expects a TaskFamily, got {type(family).__name__}")
    if env_id is None:
        if not family.name.isidentifier():
            raise TaskError(
                f"family name must be an identifier (used in the env id), got {family.name!r}"
            )
        env_id = f"lpca/{family.name}-v{version}"
    pettingzoo.register(
        "parallel", env_id, entry_point=functools.partial(SplitInfoEnv, family), kwargs=defaults
    )
    _FAMILIES[env_id] = family
    return env_id


def list_envs() -> list[str]:
    """All registered LPCA env ids, sorted."""
    return sorted(_FAMILIES)


def get_family(env_id: str) -> TaskFamily:
    """The `TaskFamily` behind a registered id."""
    try:
        return _FAMILIES[env_id]
    except (KeyError, TypeError):
        raise UnknownEnvError(
            f"unknown env id {env_id!r}; known ids: {', '.join(list_envs())}"
        ) from None


def make(env_id: str, **kwargs: Any) -> SplitInfoEnv:
    """Build a registered environment: ``make("lpca/KVLookup-v0", level=1)``."""
    get_family(env_id)
    env = pettingzoo.make("parallel", env_id, **kwargs)
    assert isinstance(env, SplitInfoEnv)
    return env
