"""lpca_protocols: communication channels (pluggy plugins), codecs, wire format, runner and the `lpca` CLI."""

from lpca_protocols.channel import AgentContext, Channel, ChannelError, ChannelOptions, Requirement
from lpca_protocols.hookspecs import hookimpl
from lpca_protocols.plugins import UnknownChannelError, channels, get_channel, make_channel

__version__ = "0.1.0"

__all__ = [
    "AgentContext",
    "Channel",
    "ChannelError",
    "ChannelOptions",
    "Requirement",
    "UnknownChannelError",
    "channels",
    "get_channel",
    "hookimpl",
    "make_channel",
]
