#!/usr/bin/env bash
# make container-test: build the bento into an OCI image without a Docker daemon (podman/buildah),
# run it, wait for /readyz, send real MNIST digits and a sine history to it over HTTP and check the
# answers equal those of the same service run outside the container. Then `podman kube play` the
# Deployment and Service of deploy/k8s/overlays/cpu with that image (token from a podman secret),
# wait for its readiness probe's path, run the same checks through it with the bearer token, check
# its peak memory against the manifest's request, and `podman kube down` it. Leaves nothing behind:
# the container, the pod, the secret, the image, podman's storage and the temporary model store are
# removed on exit.
#
# Environment (all optional):
#   BENTOML_HOME        a model store holding mnist-mlp and sine-rnn to reuse (copied, never written);
#                       without it the quick recipes are trained and exported into a temporary store
#   DATA_DIR            datasets folder with MNIST/raw (default: zoo/datadir.py's rule, repeated below)
#   MODEL_ZOO_CACHE     where the debootstrapped base rootfs is cached (default ~/.cache/model-zoo)
#   DEBIAN_MIRROR       mirror for debootstrap (default: the host's apt mirror)
#   READY_TIMEOUT       seconds to wait for /readyz (default 180)
#   KEEP_WORK=1         keep the temporary folder (logs, bentofile variant) for debugging
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-$ROOT/.venv/bin/python}
BENTOML=$(dirname "$PY")/bentoml
BASE_IMAGE=localhost/debian-py:bookworm
IMAGE=localhost/model-zoo-serving:container-test-$$
CONTAINER=model-zoo-container-test-$$
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
READY_TIMEOUT=${READY_TIMEOUT:-180}
MODELS=(mnist-mlp sine-rnn)
if [ -z "${DATA_DIR:-}" ]; then
    if [ -d "$ROOT/../shared/data" ]; then DATA_DIR=$(cd "$ROOT/../shared/data" && pwd); else DATA_DIR=$ROOT/data; fi
fi

# shellcheck source=../deploy/podman.sh
source "$ROOT/deploy/podman.sh"

# The work folder lies outside the repository: `bentoml build` copies its build context, and a
# store inside it would be copied into itself.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/model-zoo-container.XXXXXX")
mkdir -p "$WORK/logs"
STEP="start"
LOG="$WORK/logs/start.log"
STEP_START=$SECONDS
TIMINGS=()
REF_PID=""
KUBE_YAML=""
KUBE_SECRET=""
KUBE_CONTAINER=""

step() {
    [ "$STEP" = "start" ] || TIMINGS+=("$(printf '%5ds  %s' $((SECONDS - STEP_START)) "$STEP")")
    STEP=$1
    STEP_START=$SECONDS
    LOG="$WORK/logs/$(printf '%02d' ${#TIMINGS[@]})-$(echo "$1" | tr -c 'a-zA-Z0-9\n' '-').log"
    echo "==> [$(printf '%4d' "$SECONDS")s] $1"
}

on_exit() {
    local rc=$?
    set +e
    if [ $rc -ne 0 ]; then
        if [ -s "$LOG" ]; then
            echo "---- last lines of $STEP's log ----" >&2
            tail -n 30 "$LOG" >&2
            echo "----" >&2
        fi
        if [ "$STEP" = "wait for /readyz" ] || [ "$STEP" = "compare answers" ]; then
            echo "---- container log ----" >&2
            podman logs --tail 30 "$CONTAINER" >&2 2>/dev/null
            echo "---- reference server log ----" >&2
            tail -n 20 "$WORK/logs/reference-server.log" >&2 2>/dev/null
        fi
        if [ -n "$KUBE_CONTAINER" ]; then
            echo "---- kube-played container log ----" >&2
            podman logs --tail 30 "$KUBE_CONTAINER" >&2 2>/dev/null
        fi
    fi
    [ -z "$KUBE_YAML" ] || podman kube down "$KUBE_YAML" >/dev/null 2>&1
    [ -z "$KUBE_SECRET" ] || podman secret rm "$KUBE_SECRET" >/dev/null 2>&1
    if [ -n "$REF_PID" ]; then
        # The reference server runs in its own process group (setsid): stop it and its workers.
        kill -TERM -- "-$REF_PID" 2>/dev/null
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$REF_PID" 2>/dev/null || break; sleep 0.5; done
        kill -KILL -- "-$REF_PID" 2>/dev/null
    fi
    zoo_podman_teardown
    if [ "${KEEP_WORK:-0}" = 1 ]; then echo "container-test: kept $WORK" >&2; else rm -rf "$WORK"; fi
    if [ $rc -ne 0 ]; then
        echo "container-test: FAILED at step '$STEP' (exit $rc)" >&2
    fi
    exit $rc
}
trap on_exit EXIT
trap 'exit 130' INT TERM

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

has_models() {  # has_models STORE: every default model is in STORE
    local m
    for m in "${MODELS[@]}"; do
        BENTOML_HOME=$1 "$BENTOML" models get "$m:latest" >/dev/null 2>&1 || return 1
    done
}

# ---------------------------------------------------------------------------------------------
step "check prerequisites"
[ -x "$PY" ] || { echo "container-test: $PY not found; run 'make install' first" >&2; exit 1; }
[ -f "$ROOT/bentofile.yaml" ] || { echo "container-test: bentofile.yaml missing in $ROOT" >&2; exit 1; }
[ -d "$DATA_DIR/MNIST/raw" ] || { echo "container-test: MNIST not found in $DATA_DIR/MNIST/raw (set DATA_DIR)" >&2; exit 1; }
[ -r "$CA_BUNDLE" ] || { echo "container-test: $CA_BUNDLE missing (install ca-certificates)" >&2; exit 1; }
command -v kubectl >/dev/null || { echo "container-test: kubectl not found (make container-test runs with .venv/bin first on PATH, where the [dev] extra installs it on Linux)" >&2; exit 1; }

step "install container tools"
zoo_ensure_tools >>"$LOG" 2>&1
echo "    $(podman --version), $(buildah --version | cut -d' ' -f1-3), runc $(runc --version | head -n1 | cut -d' ' -f3)"

step "podman storage"
zoo_podman_env "$WORK/podman"
echo "    CONTAINERS_CONF=$CONTAINERS_CONF"

step "base image"
zoo_base_image "$BASE_IMAGE" "$WORK" 2>&1 | tee -a "$LOG"
echo "    $BASE_IMAGE: $(podman image inspect --format '{{.Size}}' "$BASE_IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"

step "default models"
SOURCE_HOME=${BENTOML_HOME:-}
export BENTOML_HOME=$WORK/bentoml_home
if [ -n "$SOURCE_HOME" ] && has_models "$SOURCE_HOME"; then
    echo "    copying ${MODELS[*]} from $SOURCE_HOME"
    for m in "${MODELS[@]}"; do
        BENTOML_HOME=$SOURCE_HOME "$BENTOML" models export "$m:latest" "$WORK/$m.bentomodel" >>"$LOG" 2>&1
        "$BENTOML" models import "$WORK/$m.bentomodel" >>"$LOG" 2>&1
    done
else
    echo "    training the quick recipes into a temporary store (python -m export.bootstrap --quick)"
    "$PY" -m export.bootstrap --quick --families "$(IFS=,; echo "${MODELS[*]}")" --data-dir "$DATA_DIR" \
        --out-dir "$WORK/checkpoints" >>"$LOG" 2>&1
fi
has_models "$BENTOML_HOME" || { echo "container-test: ${MODELS[*]} not all in the store after the models step" >&2; exit 1; }
"$BENTOML" models list | tee -a "$LOG" | sed 's/^/    /'

step "bentoml build"
"$PY" -m deploy.bentofile_variant bentofile.yaml --base-image "$BASE_IMAGE" --out "$WORK/bentofile.yaml" | sed 's/^/    /'
# no_image: build the classic (v1) bento from the bentofile. BentoML's v2 image always prepends
# `apt-get install build-essential git gnupg2` (about 600 MB) even on a custom base image; the v1
# template on a custom base image installs nothing with apt. The bento serves the same either way.
BENTO_TAG=$(BENTOML_ENABLE_FEATURES=no_image "$BENTOML" build -f "$WORK/bentofile.yaml" --output tag "$ROOT" 2>>"$LOG" \
    | tee -a "$LOG" | sed -n 's/^__tag__://p' | tail -n1)
[ -n "$BENTO_TAG" ] || { echo "container-test: bentoml build printed no tag" >&2; exit 1; }
echo "    bento $BENTO_TAG"

step "bentoml containerize"
# The host's CA bundle is mounted into the build so pip/uv can reach PyPI through this network.
# (BentoML joins several --opt volume values into one broken argument: only one mount is possible.)
"$BENTOML" containerize "$BENTO_TAG" --backend podman --image-tag "$IMAGE" \
    --opt "volume=$CA_BUNDLE:$CA_BUNDLE:ro" >>"$LOG" 2>&1
IMAGE_MB=$(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f", $1/1e6}')
echo "    $IMAGE: $IMAGE_MB MB"
if podman run --rm --entrypoint python "$IMAGE" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("torch") is not None)' >>"$LOG" 2>&1; then
    echo "    torch is not installed in the image (ONNX Runtime only)"
else
    echo "container-test: the image contains torch; the CPU serving image must be torch-free" >&2
    exit 1
fi

step "start container and reference service"
PORT=$(free_port)
podman run -d --name "$CONTAINER" -p "127.0.0.1:$PORT:3000" "$IMAGE" >>"$LOG" 2>&1
REF_PORT=$(free_port)
# The reference: the same service code and the same model store, served from the checkout.
setsid "$BENTOML" serve --host 127.0.0.1 --port "$REF_PORT" >"$WORK/logs/reference-server.log" 2>&1 &
REF_PID=$!
echo "    container on 127.0.0.1:$PORT, reference (bentoml serve, pid $REF_PID) on 127.0.0.1:$REF_PORT"

step "wait for /readyz"
"$PY" -m deploy.check_container ready "http://127.0.0.1:$PORT" --timeout "$READY_TIMEOUT" 2>&1 | tee -a "$LOG"
"$PY" -m deploy.check_container ready "http://127.0.0.1:$REF_PORT" --timeout "$READY_TIMEOUT" >>"$LOG" 2>&1

step "compare answers"
"$PY" -m deploy.check_container compare --container "http://127.0.0.1:$PORT" \
    --reference "http://127.0.0.1:$REF_PORT" --data-dir "$DATA_DIR" 2>&1 | tee -a "$LOG"

step "stop and remove container"
# SIGTERM first, as an orchestrator would; report whether the server shut down within the grace period.
podman stop --time 15 "$CONTAINER" >>"$LOG" 2>&1
echo "    stopped after $((SECONDS - STEP_START)) s, exit code $(podman inspect --format '{{.State.ExitCode}}' "$CONTAINER") (137: killed after the 15 s grace period)"
podman rm "$CONTAINER" >>"$LOG" 2>&1

step "kube play deploy/k8s/overlays/cpu"
# The overlay's Deployment and Service as they are, but for the local image and a loopback host port.
KUBE_PORT=$(free_port)
kubectl kustomize deploy/k8s/overlays/cpu 2>>"$LOG" \
    | "$PY" -m deploy.kube_play render --image "$IMAGE" --port "$KUBE_PORT" --out "$WORK/kube-play.yaml"
TOKEN=$("$PY" -c 'import secrets; print(secrets.token_hex(24))')
KUBE_SECRET=$("$PY" -m deploy.kube_play secret --manifest "$WORK/kube-play.yaml" --token="$TOKEN" --out "$WORK/secret.json")
podman secret create "$KUBE_SECRET" "$WORK/secret.json" >>"$LOG" 2>&1
rm -f "$WORK/secret.json"
KUBE_YAML=$WORK/kube-play.yaml
podman kube play "$KUBE_YAML" >>"$LOG" 2>&1
# The pod's one application container (podman names pods <deployment>-pod[-0] depending on its version).
KUBE_CONTAINER=$(podman ps --format '{{.Names}}' | grep -- '-model-zoo$' | head -n1)
[ -n "$KUBE_CONTAINER" ] || { echo "container-test: podman kube play started no model-zoo container" >&2; podman ps -a >&2; exit 1; }
echo "    pod container $KUBE_CONTAINER on 127.0.0.1:$KUBE_PORT, token from podman secret $KUBE_SECRET"

step "kube pod: wait for readiness"
# podman ignores readinessProbe (docs/deployment.md): poll the path it names, as the kubelet would.
"$PY" -m deploy.check_container ready "http://127.0.0.1:$KUBE_PORT" --timeout "$READY_TIMEOUT" 2>&1 | tee -a "$LOG"

step "kube pod: classify and compare"
ADAPTER_VALUES=deploy/k8s/overlays/inflight-hpa/prometheus-adapter-values.yaml
METRIC=$("$PY" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["rules"]["custom"][0]["name"]["matches"].strip("^$"))' "$ADAPTER_VALUES")
"$PY" -m deploy.check_container compare --container "http://127.0.0.1:$KUBE_PORT" \
    --reference "http://127.0.0.1:$REF_PORT" --data-dir "$DATA_DIR" --count 256 \
    --token="$TOKEN" --metric "$METRIC" 2>&1 | tee -a "$LOG"

step "kube pod: memory"
# The cgroup's own high-water mark (v1: max_usage_in_bytes, v2: memory.peak), read inside the pod.
PEAK=$(podman exec "$KUBE_CONTAINER" sh -c 'cat /sys/fs/cgroup/memory/memory.max_usage_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.peak')
echo "    podman stats: $(podman stats --no-stream --format '{{.MemUsage}}, {{.PIDs}} processes' "$KUBE_CONTAINER")"
"$PY" -m deploy.kube_play memory --manifest "$KUBE_YAML" --peak-bytes "$PEAK" 2>&1 | tee -a "$LOG"

step "kube down"
podman kube down "$KUBE_YAML" >>"$LOG" 2>&1
KUBE_YAML=""
KUBE_CONTAINER=""
podman secret rm "$KUBE_SECRET" >>"$LOG" 2>&1
KUBE_SECRET=""
LEFT="$(podman pod ps -q)$(podman ps -aq)$(podman volume ls -q)$(podman secret ls --format '{{.Name}}')"
[ -z "$LEFT" ] || { echo "container-test: podman kube down left pods, containers, volumes or secrets behind" >&2; exit 1; }
echo "    pod, volumes and secret removed"
podman rmi "$IMAGE" >>"$LOG" 2>&1

step "done"
echo "container-test: passed in ${SECONDS}s; image $IMAGE_MB MB (bento $BENTO_TAG). Step times:"
printf '    %s\n' "${TIMINGS[@]}"
