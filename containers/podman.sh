#!/usr/bin/env bash
# podman with the flags this kind of machine needs, and none where plain podman works.
# Every script and the compose commands here call podman through this file, so the flags live in one
# place (containers-here.md, measured on Debian 12's podman 4.3):
#  - cgroup v1 or hybrid (v1 controllers beside a unified mount): crun refuses the layout, so
#    --cgroup-manager=cgroupfs --runtime runc (runc accepts it; --cgroups=disabled is refused by runc).
#    On a pure cgroup v2 machine (stat says cgroup2fs) nothing is added.
#  - run, create and build get explicit --ulimit nofile/nproc within this shell's hard limits: podman's
#    defaults (nofile 1048576) can exceed them, and the container then dies with "error setting rlimit
#    ... operation not permitted". Limits within the hard ones change nothing where the defaults work.
# Overrides: SPLITINFER_PODMAN (the podman to run), SPLITINFER_PODMAN_GLOBAL (global flags; set it
# empty for none), SPLITINFER_PODMAN_LIMITS (the same, for the --ulimit flags).
set -eu

engine=${SPLITINFER_PODMAN:-podman}

if [ "${SPLITINFER_PODMAN_GLOBAL+set}" = set ]; then
    global=$SPLITINFER_PODMAN_GLOBAL
elif [ "$(basename "$engine")" = podman ] && [ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" != cgroup2fs ] \
        && command -v runc >/dev/null 2>&1; then
    global="--cgroup-manager=cgroupfs --runtime runc"
else
    global=""
fi

# The smaller of a hard limit and a cap ("unlimited" counts as above any cap).
limit() {
    case "$1" in
        unlimited) echo "$2" ;;
        *) if [ "$1" -lt "$2" ]; then echo "$1"; else echo "$2"; fi ;;
    esac
}

if [ "${SPLITINFER_PODMAN_LIMITS+set}" = set ]; then
    limits=$SPLITINFER_PODMAN_LIMITS
elif [ "$(basename "$engine")" = podman ]; then
    # 4096 each: far more than a worker's sockets and threads, or a pip install's, need.
    nofile=$(limit "$(ulimit -Hn)" 4096)
    nproc=$(limit "$(ulimit -Hu)" 4096)
    limits="--ulimit nofile=$nofile:$nofile --ulimit nproc=$nproc:$nproc"
else
    limits=""
fi

if [ $# -gt 0 ]; then
    case "$1" in
        run|create|build)
            sub=$1
            shift
            # shellcheck disable=SC2086  # the flags are words on purpose
            set -- "$sub" $limits "$@"
            ;;
    esac
fi
# shellcheck disable=SC2086
exec "$engine" $global "$@"
