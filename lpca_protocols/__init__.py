"""lpca_protocols: communication channels (pluggy plugins), codecs, wire format, runner and the `lpca` CLI.

Channels, codecs and the runner arrive with their issues; today this package hosts the CLI.
"""

__version__ = "0.1.0"
