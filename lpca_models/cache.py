"""Where LPCA keeps what it makes once per machine (converted models, published codecs)."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir(kind: str, env: str) -> Path:
    """``$<env>`` when set, else the XDG cache directory (``$XDG_CACHE_HOME``, else ``~/.cache``)
    + ``lpca/<kind>``."""
    override = os.environ.get(env)
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "lpca" / kind
