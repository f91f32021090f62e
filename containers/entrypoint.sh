#!/bin/sh
# The worker image's entrypoint: `splitinfer worker` with its flags taken from SPLITINFER_* variables,
# then the container's arguments (which win: the worker's parser keeps a flag's last value).
# Why variables: compose files and Kubernetes manifests set a container's environment more readably
# than its argument list, and one image then serves every device.
#
#   SPLITINFER_NAME         device name, as in cluster.yaml (required, unless --name is an argument)
#   SPLITINFER_LISTEN       address to bind (default tcp://0.0.0.0:5555)
#   SPLITINFER_TOKEN_FILE   the shared token's file (default /run/secrets/splitinfer-token, if it exists)
#   SPLITINFER_NUM_THREADS  ONNX Runtime intra-op threads (0: its default)
#   SPLITINFER_PROVIDERS    execution providers, comma-separated
#   SPLITINFER_MAC_TENSORS  1: the token's MAC covers tensor bytes too
#   SPLITINFER_OPTIMIZE_AHEAD  1: keep partitions as ONNX Runtime optimized them for this CPU
#   SPLITINFER_CURVE_SECRET_KEY, SPLITINFER_CURVE_COORDINATOR_KEYS, SPLITINFER_CURVE_PEER_KEYS: CURVE files
set -eu

named=
for arg in "$@"; do
    case "$arg" in --name|--name=*) named=1 ;; esac
done
if [ -z "${SPLITINFER_NAME:-}" ] && [ -z "$named" ]; then
    echo "error: this worker has no device name; set SPLITINFER_NAME (e.g. -e SPLITINFER_NAME=edge)" \
         "or pass --name NAME" >&2
    exit 2
fi

token_file=${SPLITINFER_TOKEN_FILE:-}
if [ -z "$token_file" ] && [ -f /run/secrets/splitinfer-token ]; then
    token_file=/run/secrets/splitinfer-token
fi
if [ -n "$token_file" ] && [ ! -r "$token_file" ]; then
    # The worker would say it cannot read the file; this names the usual cause in a container.
    echo "error: the token file $token_file is not readable by uid $(id -u);" \
         "mount it readable by that user (e.g. mode 0644 in a 0700 folder, or a secret with uid=$(id -u))" >&2
    exit 2
fi

# Flags before the arguments, in reverse order of how they are added (set -- prepends).
set -- ${SPLITINFER_NAME:+--name "$SPLITINFER_NAME"} --listen "${SPLITINFER_LISTEN:-tcp://0.0.0.0:5555}" "$@"
if [ -n "$token_file" ]; then set -- --token-file "$token_file" "$@"; fi
if [ -n "${SPLITINFER_NUM_THREADS:-}" ]; then set -- --num-threads "$SPLITINFER_NUM_THREADS" "$@"; fi
if [ -n "${SPLITINFER_PROVIDERS:-}" ]; then set -- --providers "$SPLITINFER_PROVIDERS" "$@"; fi
case "${SPLITINFER_MAC_TENSORS:-}" in 1|true|yes) set -- --mac-tensors "$@" ;; esac
case "${SPLITINFER_OPTIMIZE_AHEAD:-}" in 1|true|yes) set -- --optimize-ahead "$@" ;; esac
if [ -n "${SPLITINFER_CURVE_SECRET_KEY:-}" ]; then set -- --curve-secret-key "$SPLITINFER_CURVE_SECRET_KEY" "$@"; fi
if [ -n "${SPLITINFER_CURVE_COORDINATOR_KEYS:-}" ]; then
    set -- --curve-coordinator-keys "$SPLITINFER_CURVE_COORDINATOR_KEYS" "$@"
fi
if [ -n "${SPLITINFER_CURVE_PEER_KEYS:-}" ]; then set -- --curve-peer-keys "$SPLITINFER_CURVE_PEER_KEYS" "$@"; fi

# exec: the worker is PID 1 and gets the engine's SIGTERM itself (it stops cleanly on it).
exec splitinfer worker "$@"
