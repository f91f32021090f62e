#!/usr/bin/env bash
# The emulated 3-device continuum (camera, edge, cloud) as three worker containers, driven from this
# machine: build the image if it is missing, start one container per device, then profile, plan, run
# (checked against ONNX Runtime on this machine) and bench through them, and print what was measured.
#
#   containers/run-demo.sh                           # mobilenetv2, 30 requests per plan
#   SPLITINFER_DEMO_MODEL=resnet18 SPLITINFER_DEMO_REQUESTS=50 containers/run-demo.sh
#
# Addresses: each worker listens on 5555 in its container, published on this machine's own IP at
# 18555, 18556, 18557 (SPLITINFER_DEMO_PORT: the first). cluster.yaml names tcp://HOST_IP:PORT, not
# 127.0.0.1: the workers send each other cut tensors and the coordinator its results at the addresses
# the cluster gives, and a container's 127.0.0.1 is its own. The host's IP reaches the published
# ports from the host and from every container, and this machine's coordinator from the containers.
# The devices' speeds and links are the demo's declared emulation (cluster.yaml: slowdown, links);
# the containers add real process, network-namespace and port-forwarding boundaries.
#
# Environment: SPLITINFER_IMAGE, SPLITINFER_DEMO_MODEL (a zoo name), SPLITINFER_DEMO_ZOO_ARGS (e.g.
# --small), SPLITINFER_DEMO_REQUESTS, SPLITINFER_DEMO_DIR (kept; default a new temporary folder),
# SPLITINFER_HOST_IP, SPLITINFER_DEMO_PREFIX (of the containers' names), SPLITINFER_DEMO_KEEP=1 (leave
# the containers running), SPLITINFER_DEMO_NO_BUILD=1 (fail instead of building a missing image).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
podman="$here/podman.sh"
image=${SPLITINFER_IMAGE:-localhost/splitinfer-worker:latest}
model=${SPLITINFER_DEMO_MODEL:-mobilenetv2}
zoo_args=${SPLITINFER_DEMO_ZOO_ARGS:-}
requests=${SPLITINFER_DEMO_REQUESTS:-30}
port0=${SPLITINFER_DEMO_PORT:-18555}
prefix=${SPLITINFER_DEMO_PREFIX:-splitinfer-demo}
devices=(camera edge cloud)
splitinfer="$root/.venv/bin/splitinfer"
python="$root/.venv/bin/python"
[ -x "$splitinfer" ] || { splitinfer=splitinfer; python=python3; }

say() { printf '\n== %s\n' "$*"; }
started=$SECONDS
elapsed() { echo "$((SECONDS - started)) s"; }

if [ -n "${SPLITINFER_DEMO_DIR:-}" ]; then
    work=$SPLITINFER_DEMO_DIR
    mkdir -p "$work"
else
    work=$(mktemp -d -t splitinfer-containers-XXXXXX)
fi
chmod 0700 "$work"  # the token below is readable by all, so its folder must not be

host_ip=${SPLITINFER_HOST_IP:-$("$python" -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("192.0.2.1", 9))  # no packet is sent: only the route is looked up
print(s.getsockname()[0])')}
case "$host_ip" in
    127.*) echo "error: this machine's only IP is $host_ip; containers cannot reach it there." \
                "Give SPLITINFER_HOST_IP=an address of this machine that they can reach" >&2; exit 2 ;;
esac

remove_containers() {
    for d in "${devices[@]}"; do "$podman" rm -f -t 5 "$prefix-$d" >/dev/null 2>&1 || true; done
}
cleanup() {
    if [ "${SPLITINFER_DEMO_KEEP:-0}" = 1 ]; then
        echo "containers left running: $podman rm -f ${devices[*]/#/$prefix-}"
    else
        remove_containers
    fi
}
trap cleanup EXIT

say "image $image"
# Built from this checkout's sources? Workers from other sources may not speak this coordinator's messages.
built_from() { "$podman" image inspect --format '{{index .Labels "io.splitinfer.source"}}' "$image" 2>/dev/null; }
source_hash=$("$here/source-hash.sh")
if [ "$(built_from)" != "$source_hash" ]; then
    if [ "${SPLITINFER_DEMO_NO_BUILD:-0}" = 1 ]; then
        echo "error: no image $image built from this checkout's sources ($source_hash);" \
             "build it with containers/build.sh" >&2
        exit 2
    fi
    "$here/build.sh" "$image"
fi
"$podman" image inspect --format '{{.Id}} {{.Size}}' "$image" | \
    awk '{printf "id %s, %.0f MB\n", substr($1, 1, 12), $2 / 1e6}'

say "token and workers (work folder $work)"
"$python" -c 'import secrets; print(secrets.token_hex(32))' > "$work/token.txt"
chmod 0644 "$work/token.txt"  # the containers' non-root user (uid 10001) reads it
remove_containers  # of an earlier run that was killed
for i in "${!devices[@]}"; do
    d=${devices[$i]}
    "$podman" run -d --name "$prefix-$d" -p "$host_ip:$((port0 + i)):5555" \
        -e SPLITINFER_NAME="$d" -e SPLITINFER_NUM_THREADS=1 \
        -v "$work/token.txt:/run/secrets/splitinfer-token:ro" "$image" >/dev/null
done
for d in "${devices[@]}"; do
    for _ in $(seq 120); do
        if "$podman" logs "$prefix-$d" 2>&1 | grep -q '^READY'; then break; fi
        if [ "$("$podman" inspect --format '{{.State.Running}}' "$prefix-$d")" != true ]; then
            echo "error: the $d container exited:" >&2
            "$podman" logs "$prefix-$d" >&2
            exit 1
        fi
        sleep 0.5
    done
    "$podman" logs "$prefix-$d" 2>&1 | grep -q '^READY' || { echo "error: $d did not start" >&2; exit 1; }
done
"$podman" ps --filter "name=$prefix-" --format '{{.Names}}  {{.Ports}}  {{.Status}}'

# The demo's continuum (splitinfer demo, README "Set up and go"), its workers in the containers.
cat > "$work/cluster-containers.yaml" <<YAML
schema: 1
backend: workers
token_file: token.txt
source: camera
sink: camera
devices:
  - {name: camera, address: "tcp://$host_ip:$port0", num_threads: 1, slowdown: 10,
     power: {busy_w: 4.0, idle_w: 1.0, radio_w: 1.5, battery: true}}
  - {name: edge, address: "tcp://$host_ip:$((port0 + 1))", num_threads: 1}
  - {name: cloud, address: "tcp://$host_ip:$((port0 + 2))", num_threads: 1}
links:
  - {from: camera, to: edge, bandwidth: 40Mbit/s, latency: 3ms}
  - {from: edge, to: cloud, bandwidth: 50Mbit/s, latency: 20ms}
  - {from: camera, to: cloud, bandwidth: 20Mbit/s, latency: 30ms}
YAML
cat "$work/cluster-containers.yaml"

cd "$work"
say "model: splitinfer zoo build $model $zoo_args"
# shellcheck disable=SC2086  # zoo_args are flags
"$splitinfer" zoo build "$model" $zoo_args -o model.onnx

say "profile through the containers ($(elapsed) so far)"
# Its per-block table is in profile.log; shown: the sums, the whole model, the devices and links.
"$splitinfer" profile model.onnx --cluster cluster-containers.yaml -o p.json > profile.log 2>&1 \
    || { cat profile.log >&2; exit 1; }
awk '/├/ {shown = 1} shown' profile.log

say "plan ($(elapsed) so far)"
"$splitinfer" plan p.json --cluster cluster-containers.yaml --top 3 -o plan.json

say "run one request through the containers, checked against ONNX Runtime here ($(elapsed) so far)"
"$python" - <<'PY'
import numpy as np
import onnx
shape = [d.dim_value for d in onnx.load("model.onnx", load_external_data=False).graph.input[0].type.tensor_type.shape.dim]
np.save("x.npy", np.random.default_rng(0).standard_normal(shape).astype(np.float32))
PY
"$splitinfer" run plan.json --input x.npy -o y.npy
"$python" - <<'PY'
import numpy as np
import onnxruntime as ort
sess = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
want = sess.run(None, {sess.get_inputs()[0].name: np.load("x.npy")})[0]
got = np.load("y.npy")
print(f"outputs through the containers vs ONNX Runtime here: max abs difference {np.abs(got - want).max():.2e}, "
      f"same top-1: {bool((got.argmax(-1) == want.argmax(-1)).all())}")
PY

say "bench the 3 best plans, $requests requests each, interleaved ($(elapsed) so far)"
"$splitinfer" bench plan.json --top 3 --requests "$requests" -o rank.json

say "the best single device, for comparison ($(elapsed) so far)"
if ! { "$splitinfer" plan p.json --cluster cluster-containers.yaml --max-stages 1 -o single.json \
        && "$splitinfer" bench single.json --requests "$requests" -o bench-single.json; } > single.log 2>&1; then
    cat single.log >&2
    exit 1
fi
"$python" - <<'PY'
import json
rank = json.load(open("rank.json"))
best = next(p for p in rank["plans"] if p["measured_rank"] == 1)["bench"]
single = json.load(open("bench-single.json"))
def stages(bench):
    return " -> ".join(f"{s['device']}[{s['first_block']}-{s['last_block']}]" for s in bench["plan"]["stages"])
for what, b in (("measured best of the 3", best), ("best single device", single)):
    print(f"{what:22s} {stages(b):32s} median {1e3 * b['latency_median_s']:7.2f} ms "
          f"(plan {1e3 * b['predicted_latency_s']:6.2f} ms), p95 {1e3 * b['latency_p95_s']:7.2f} ms, "
          f"{b['throughput_rps']:6.1f} req/s at concurrency 1")
ratio = single["latency_median_s"] / best["latency_median_s"]
if len(best["plan"]["stages"]) == 1:
    print("no split: the measured best plan runs on one device")
elif ratio >= 1:
    print(f"split: {ratio:.2f}x faster than the best single device (benched after, not interleaved)")
else:
    print(f"split: {1 / ratio:.2f}x slower than the best single device (benched after, not interleaved)")
PY

say "worker containers after the bench"
"$podman" stats --no-stream --format '{{.Name}}  cpu {{.CPUPerc}}  mem {{.MemUsage}}' \
    "${devices[@]/#/$prefix-}" 2>/dev/null || true

say "done in $(elapsed); files in $work"
