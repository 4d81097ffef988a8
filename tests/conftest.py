import random

import pytest

import lpca_envs


@pytest.fixture(params=lpca_envs.list_envs())
def env_id(request):
    return request.param


def all_env_levels():
    return [(i, lv) for i in lpca_envs.list_envs() for lv in lpca_envs.get_family(i).levels]


@pytest.fixture
def rng():
    return random.Random(1234)
