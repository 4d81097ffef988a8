"""The docker sandbox image, built with no registry: debootstrap a Debian rootfs, `docker import` it.

The tag is ``lpca-sandbox:<hash of RECIPE>``, so the image is built once per
machine and rebuilt only when the recipe changes. Building needs root,
``debootstrap`` and Debian's package archive (about a minute, ~250 MB).

This file is stdlib-only so that CI can run it before any virtualenv exists:

    python3 lpca_envs/code/sandbox/image.py build     # idempotent; prints the tag
    python3 lpca_envs/code/sandbox/image.py tag
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

#: Everything that determines the image. Change it and the tag changes.
RECIPE: dict[str, Any] = {
    "suite": "bookworm",
    "variant": "minbase",
    "include": ["python3"],
    "mirror": "http://deb.debian.org/debian",
    "trim": ["usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "var/cache/apt",
             "var/lib/apt/lists"],
    "dirs": ["work"],
    "changes": ["ENV PATH=/usr/local/bin:/usr/bin:/bin", "ENV LANG=C.UTF-8", "WORKDIR /work",
                "USER 65534:65534"],
    "version": 1,
}  # fmt: skip
REPOSITORY = "lpca-sandbox"
_LOCK = os.path.join(tempfile.gettempdir(), "lpca-sandbox-image.lock")


def image_tag() -> str:
    """``lpca-sandbox:<12 hex digits of the recipe's sha256>``."""
    digest = hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode()).hexdigest()
    return f"{REPOSITORY}:{digest[:12]}"


def build_missing_reason() -> str | None:
    """None when this machine can build the image, else what is missing."""
    if os.geteuid() != 0:
        return "building the sandbox image needs root (debootstrap); run .ci/setup_sandbox.sh as root"
    if shutil.which("debootstrap") is None:
        return "building the sandbox image needs debootstrap (apt-get install debootstrap)"
    return None


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    """One build at a time per machine (parallel test workers wait for the first)."""
    with open(_LOCK, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build_rootfs_tar(out_tar: str, log: Callable[[str], None] = print) -> None:
    """debootstrap the recipe's rootfs into a temp dir and tar it to `out_tar`."""
    why = build_missing_reason()
    if why:
        raise RuntimeError(why)
    root = tempfile.mkdtemp(prefix="lpca-rootfs-")
    try:
        cmd = [
            "debootstrap", f"--variant={RECIPE['variant']}", f"--include={','.join(RECIPE['include'])}",
            RECIPE["suite"], root, RECIPE["mirror"],
        ]  # fmt: skip
        log(f"lpca: {' '.join(cmd)}")
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"debootstrap failed ({r.returncode}): {r.stdout[-2000:]}{r.stderr[-2000:]}")
        for rel in RECIPE["trim"]:
            shutil.rmtree(os.path.join(root, rel), ignore_errors=True)
        for rel in RECIPE["dirs"]:
            os.makedirs(os.path.join(root, rel), exist_ok=True)
        subprocess.run(["tar", "-C", root, "-cf", out_tar, "."], check=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _cli_has(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


def build_with_cli(log: Callable[[str], None] = print) -> str:
    """Build the image with the docker CLI if it is missing; return its tag."""
    tag = image_tag()
    with build_lock():
        if _cli_has(tag):
            log(f"lpca: sandbox image {tag} is present")
            return tag
        log(f"lpca: building sandbox image {tag} (debootstrap, about a minute, once per machine)")
        with tempfile.TemporaryDirectory(prefix="lpca-image-") as d:
            tar = os.path.join(d, "rootfs.tar")
            build_rootfs_tar(tar, log)
            cmd = ["docker", "import"]
            for c in RECIPE["changes"]:
                cmd += ["--change", c]
            subprocess.run([*cmd, tar, tag], check=True, capture_output=True)
        log(f"lpca: built {tag}")
        return tag


def main(argv: list[str]) -> int:
    if argv[1:] == ["tag"]:
        print(image_tag())
        return 0
    if argv[1:] == ["build"]:
        try:
            print(build_with_cli(lambda m: print(m, file=sys.stderr)))
        except (RuntimeError, subprocess.CalledProcessError) as e:
            print(f"lpca: {e}", file=sys.stderr)
            return 1
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
