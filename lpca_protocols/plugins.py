"""The plugin manager: built-in and third-party channels, registered through the same hook.

Plugins load lazily, once. ``LPCA_PLUGINS`` restricts which external plugins
load: a comma-separated list of entry-point names, or ``none``; unset loads all.
A plugin that fails to import or register is skipped with a warning naming it.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import warnings
from typing import Any

import pluggy

from lpca_envs.errors import LPCAError
from lpca_protocols import hookspecs
from lpca_protocols.channel import Channel, ChannelError

ENTRY_POINT_GROUP = "lpca"
ENV_VAR = "LPCA_PLUGINS"
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


class UnknownChannelError(LPCAError, KeyError):
    """A channel name is not registered; the message lists the known names."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class PluginWarning(UserWarning):
    """A plugin could not be loaded; LPCA continues without it."""


_pm: pluggy.PluginManager | None = None
_channels: dict[str, type[Channel]] | None = None
loaded_plugins: dict[str, str] = {}  # entry-point name -> module, for `lpca channels`


def plugin_manager() -> pluggy.PluginManager:
    """The one plugin manager, with built-ins and allowed entry-point plugins loaded."""
    global _pm
    if _pm is None:
        pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        from lpca_protocols.channels import builtin

        pm.register(builtin, name="lpca-builtin")
        _load_entry_points(pm)
        _pm = pm
    return _pm


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    allowed = os.environ.get(ENV_VAR)
    allow = None if allowed is None else {a.strip() for a in allowed.split(",") if a.strip()} - {"none"}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if allow is not None and ep.name not in allow:
            continue
        try:
            pm.register(ep.load(), name=ep.name)
            loaded_plugins[ep.name] = ep.value
        except Exception as e:  # a broken plugin must not take the CLI down
            warnings.warn(
                f"LPCA plugin {ep.name!r} ({ep.value}) failed to load: {e!r}", PluginWarning, stacklevel=2
            )


def channels() -> dict[str, type[Channel]]:
    """All registered channels by name (computed once)."""
    global _channels
    if _channels is None:
        _channels = _collect(plugin_manager())
    return _channels


def _collect(pm: pluggy.PluginManager) -> dict[str, type[Channel]]:
    found: dict[str, type[Channel]] = {}

    def register(cls: Any) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Channel)):
            raise ChannelError(f"register() expects a Channel subclass, got {cls!r}")
        if not _NAME.match(cls.name or ""):
            raise ChannelError(
                f"channel {cls.__qualname__} needs a name matching [a-z0-9-]+, got {cls.name!r}"
            )
        if cls.name in found and found[cls.name] is not cls:
            raise ChannelError(
                f"channel name {cls.name!r} registered twice: "
                f"{found[cls.name].__qualname__} and {cls.__qualname__}"
            )
        found[cls.name] = cls

    for impl in pm.hook.register_channels.get_hookimpls():
        try:
            impl.function(register=register)
        except Exception as e:
            if impl.plugin_name == "lpca-builtin":
                raise
            warnings.warn(
                f"LPCA plugin {impl.plugin_name!r} failed to register: {e!r}", PluginWarning, stacklevel=2
            )
    return found


def get_channel(name: str) -> type[Channel]:
    """The channel class registered as `name`."""
    reg = channels()
    if name not in reg:
        raise UnknownChannelError(f"unknown channel {name!r}; known channels: {', '.join(sorted(reg))}")
    return reg[name]


def make_channel(name: str, **options: Any) -> Channel:
    return get_channel(name)(**options)


def register_plugin(plugin: object, name: str | None = None) -> None:
    """Register a plugin object directly (tests, notebooks); the channel table is rebuilt."""
    global _channels
    plugin_manager().register(plugin, name=name)
    _channels = None


def unregister_plugin(plugin: object) -> None:
    global _channels
    plugin_manager().unregister(plugin)
    _channels = None


def reset() -> None:
    """Forget everything loaded (tests use it to reload with another LPCA_PLUGINS)."""
    global _pm, _channels
    _pm, _channels = None, None
    loaded_plugins.clear()
