"""The hooks of LPCA's plugin system; each docstring is the contract for plugin authors.

A plugin is a module or object with ``@hookimpl`` functions, made known through the
``lpca`` entry-point group of an installed package::

    [options.entry_points]
    lpca =
        my_channel = my_package.plugin

    # my_package/plugin.py
    from lpca_protocols import hookimpl
    @hookimpl
    def register_channels(register):
        register(MyChannel)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT = "lpca"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_channels(register: Callable[[type[Any]], None]) -> None:
    """Register communication channels: call ``register(ChannelClass)`` once per `Channel` subclass.

    The class must set a unique ``name`` (lower-case, ``[a-z0-9-]``); registering a
    name twice is an error naming both classes.
    """
