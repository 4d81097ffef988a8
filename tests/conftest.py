import random

import pytest

import lpca_envs


def _env_param(env_id):
    reason = lpca_envs.code.sandbox_unavailable_reason()
    needs_sandbox = hasattr(lpca_envs.get_family(env_id), "episodes_for_generic_tests")
    marks = [pytest.mark.skip(reason=f"no sandbox: {reason}")] if needs_sandbox and reason else []
    return pytest.param(env_id, marks=marks, id=env_id)


@pytest.fixture(params=[_env_param(i) for i in lpca_envs.list_envs()])
def env_id(request):
    return request.param


def all_env_levels():
    return [(i, lv) for i in lpca_envs.list_envs() for lv in lpca_envs.get_family(i).levels]


@pytest.fixture
def rng():
    return random.Random(1234)
