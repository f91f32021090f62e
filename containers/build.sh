#!/usr/bin/env bash
# Build the splitinfer worker image from this checkout:  containers/build.sh [IMAGE]
# (default IMAGE: localhost/splitinfer-worker:latest, or $SPLITINFER_IMAGE).
#
# Where a registry and PyPI answer, this is a plain `podman build` of containers/Containerfile on the
# official python:3.11-slim image, every dependency from PyPI inside the build. Where they do not, it
# adapts, and says so:
#  - no registry: the base is made here with mmdebstrap (Debian bookworm, minbase, python3 and its
#    venv module) and imported as localhost/splitinfer-base:bookworm; it is made once.
#  - the build cannot reach PyPI (checked from a container of the base: an https request to pypi.org):
#    the wheels of splitinfer and its dependencies are built on this machine with `pip wheel` (this
#    machine's pip settings, proxies and certificates apply) into containers/wheels/, which the build
#    installs from with --no-index. Where the build reaches PyPI, old wheels there are removed.
# Overrides: SPLITINFER_BASE (a base image), SPLITINFER_WHEELS=1|0 (force either way).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
podman="$here/podman.sh"
image=${1:-${SPLITINFER_IMAGE:-localhost/splitinfer-worker:latest}}
official=docker.io/library/python:3.11-slim-bookworm
local_base=localhost/splitinfer-base:bookworm

say() { echo "build: $*" >&2; }

# 1. The base image.
if [ -n "${SPLITINFER_BASE:-}" ]; then
    base=$SPLITINFER_BASE
elif "$podman" image exists "$official" || "$podman" pull -q "$official" >/dev/null 2>&1; then
    base=$official
elif "$podman" image exists "$local_base"; then
    base=$local_base
    say "no registry answers; using $base (made earlier with mmdebstrap)"
else
    if ! command -v mmdebstrap >/dev/null; then
        say "error: no registry answers for $official and mmdebstrap is missing;" \
            "install it (apt-get install mmdebstrap) or give SPLITINFER_BASE=an image with python3 >= 3.11"
        exit 2
    fi
    base=$local_base
    say "no registry answers; making $base from Debian packages with mmdebstrap (about a minute)"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    # Documentation and man pages only take space in an image nobody logs into.
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
        bookworm "$tmp/base.tar"
    "$podman" import --quiet "$tmp/base.tar" "$base" >/dev/null
fi

# 2. Where the dependencies come from.
wheels=${SPLITINFER_WHEELS:-auto}
if [ "$wheels" = auto ]; then
    probe='import urllib.request; urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=20)'
    if reason=$("$podman" run --rm --network=bridge "$base" python3 -c "$probe" 2>&1); then
        wheels=0
    else
        wheels=1
        say "the build cannot reach PyPI ($(echo "$reason" | tail -n 1));" \
            "building the wheels on this machine into containers/wheels/"
    fi
fi
rm -f "$here"/wheels/*.whl
if [ "$wheels" = 1 ]; then
    python=python3
    [ -x "$root/.venv/bin/python" ] && python="$root/.venv/bin/python"
    # Its log is shown only when it fails: a pip configured with extra indexes warns about each of them.
    log=$(mktemp)
    if ! "$python" -m pip wheel --wheel-dir "$here/wheels" "$root" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        say "error: pip wheel failed (above); fix its cause, or give SPLITINFER_WHEELS=0 to use PyPI in the build"
        exit 1
    fi
    rm -f "$log"
    say "$(find "$here/wheels" -name '*.whl' | wc -l) wheels in containers/wheels/"
fi

# 3. The image.
say "building $image on $base"
"$podman" build --quiet --file "$here/Containerfile" --ignorefile "$here/Containerfile.dockerignore" \
    --build-arg "BASE=$base" --build-arg "SOURCE_HASH=$("$here/source-hash.sh")" \
    --tag "$image" "$root" >/dev/null
say "built $image ($("$podman" image inspect --format '{{.Size}}' "$image" | \
    awk '{printf "%.0f MB", $1 / 1e6}'))"
