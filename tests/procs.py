"""Host-process probes for the sandbox tests: processes carrying a marker, and waiting for them to go."""

from __future__ import annotations

import os
import time


def pids_with(token: str) -> list[int]:
    """Pids (other than this one) whose command line contains `token`."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if token.encode() in f.read():
                        found.append(int(name))
            except OSError:
                pass
    return found


def gone(token: str, within: float = 3.0) -> bool:
    """True once no process carries `token`; False if some still do after `within` seconds."""
    deadline = time.monotonic() + within
    while pids_with(token):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
