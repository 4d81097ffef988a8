"""lpca_envs: split-information tasks as PettingZoo parallel environments.

Importing this package registers every built-in family as ``lpca/<Name>-v0`` in
PettingZoo's parallel registry. It never imports torch, transformers or mlx.
"""

from lpca_envs.agents import (
    SCRIPTED_KINDS,
    EpisodeResult,
    ScriptedAgent,
    ScriptedSummary,
    evaluate_scripted,
    play_episode,
)
from lpca_envs.custom import CustomTask, custom_env
from lpca_envs.env import Delivery, SplitInfoEnv, Violation
from lpca_envs.errors import (
    ActionError,
    ActionTypeError,
    BudgetError,
    EpisodeOverError,
    FinishedAgentError,
    LPCAError,
    MessageError,
    TaskError,
    UnknownAgentError,
    UnknownEnvError,
)
from lpca_envs.families import BUILTIN_FAMILIES
from lpca_envs.messages import Budget, Message
from lpca_envs.registry import get_family, list_envs, make, register_family
from lpca_envs.spaces import PRINTABLE, MessageSpace
from lpca_envs.task import Task, TaskFamily, Utterance, Verdict

__version__ = "0.1.0"

for _family in BUILTIN_FAMILIES:
    register_family(_family)

from lpca_envs.code import CODE_FAMILIES  # noqa: E402  (registered after the synthetic families)

for _family in CODE_FAMILIES:
    register_family(_family, max_answer_chars=4096)  # code answers are longer than the 1024 default
del _family

__all__ = [
    "PRINTABLE",
    "SCRIPTED_KINDS",
    "ActionError",
    "ActionTypeError",
    "Budget",
    "BudgetError",
    "CustomTask",
    "Delivery",
    "EpisodeOverError",
    "EpisodeResult",
    "FinishedAgentError",
    "LPCAError",
    "Message",
    "MessageError",
    "MessageSpace",
    "ScriptedAgent",
    "ScriptedSummary",
    "SplitInfoEnv",
    "Task",
    "TaskError",
    "TaskFamily",
    "UnknownAgentError",
    "UnknownEnvError",
    "Utterance",
    "Verdict",
    "Violation",
    "custom_env",
    "evaluate_scripted",
    "get_family",
    "list_envs",
    "make",
    "play_episode",
    "register_family",
]
