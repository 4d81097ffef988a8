#!/usr/bin/env bash
# Sandboxes for the code tasks: install docker.io, debootstrap and bubblewrap from
# Debian's archive if missing, start dockerd in the background if no daemon answers,
# wait for `docker info`, then build the registry-free sandbox image (cached by the
# hash of its recipe: a no-op once built). Idempotent. Needs root for the installs,
# dockerd and debootstrap; without root it only reports what it cannot do.
# A failure here never fails CI by itself: the docker tests then skip with a reason.
set -uo pipefail
cd "$(dirname "$0")/.."

log() { echo "setup_sandbox: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "not root: skipping installs, dockerd and the image build"
    exit 0
fi

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null \
        || log "apt-get install ${missing[*]} failed"
fi

if ! docker info >/dev/null 2>&1; then
    if command -v dockerd >/dev/null 2>&1; then
        log "starting dockerd in the background (log: /var/log/lpca-dockerd.log)"
        setsid dockerd >/var/log/lpca-dockerd.log 2>&1 < /dev/null &
        for _ in $(seq 1 60); do
            docker info >/dev/null 2>&1 && break
            sleep 1
        done
    fi
fi

if docker info >/dev/null 2>&1; then
    log "docker daemon is up; building the sandbox image if missing"
    python3 lpca_envs/code/sandbox/image.py build || log "building the sandbox image failed"
else
    log "no docker daemon answers: the docker tests will skip (see /var/log/lpca-dockerd.log)"
fi
exit 0
