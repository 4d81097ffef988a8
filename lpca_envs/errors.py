"""Typed errors of the environment layer.

Every error names what was expected and what arrived. Each one also derives from
the matching builtin (``TypeError``/``ValueError``/``KeyError``/``RuntimeError``)
so callers that already catch those keep working.
"""

from __future__ import annotations


class LPCAError(Exception):
    """Base class of every error raised by LPCA."""


class MessageError(LPCAError, ValueError):
    """A `Message` was built with a bad field (payload not bytes, bits inconsistent...)."""


class BudgetError(LPCAError, ValueError):
    """A `Budget` was built with a bad limit."""


class ActionError(LPCAError, ValueError):
    """An action passed to `SplitInfoEnv.step` is malformed."""


class UnknownAgentError(ActionError, KeyError):
    """An action names an agent the environment does not have."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class FinishedAgentError(ActionError):
    """An action was given for an agent that is no longer live."""


class EpisodeOverError(LPCAError, RuntimeError):
    """`step` was called before `reset` or after the episode ended."""


class UnknownEnvError(LPCAError, KeyError):
    """An environment id is not registered; the message lists the known ids."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class TaskError(LPCAError, ValueError):
    """A task family or custom task was given bad parameters (e.g. an unknown level)."""


class ActionTypeError(ActionError, TypeError):
    """An action field has the wrong type (e.g. an int answer, a str payload)."""
