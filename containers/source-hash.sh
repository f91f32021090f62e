#!/usr/bin/env bash
# A short hash of what the worker image installs from this checkout: pyproject.toml and every file
# under src/ (caches and build metadata aside). build.sh labels the image with it
# (io.splitinfer.source); run-demo.sh and the tests compare it with the checkout's, because a coordinator
# here and workers built from other sources may not speak the same messages.
set -euo pipefail
cd "$(dirname "$0")/.."
{ echo pyproject.toml; find src -type f ! -path '*/__pycache__/*' ! -path '*.egg-info/*' ! -name '*.pyc'; } \
    | LC_ALL=C sort | xargs -d '\n' sha256sum | sha256sum | cut -c1-16
