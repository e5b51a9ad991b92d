#!/usr/bin/env bash
# make image-test: build the image with podman and run `odeon demo` in it as its non-root user, with a
# read-only root filesystem and a tmpfs /tmp, as Kubernetes runs it (helm/odeon-train). Needs root.
# Where no registry can be reached (this project's CI machines) the base is a local Debian bookworm
# made by debootstrap, and pip takes torch from the machine's local wheel index when there is one.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE="${IMAGE:-localhost/odeon-job:dev}"
BASE_IMAGE="${BASE_IMAGE:-localhost/debian:bookworm}"
export DEBIAN_FRONTEND=noninteractive
command -v podman >/dev/null || { apt-get update -qq && apt-get install -y -qq podman runc debootstrap >/dev/null; }
P=(podman --runtime runc --cgroup-manager=cgroupfs)
U=(--ulimit nofile=20000:20000 --ulimit nproc=1000:1000)  # without them runc fails "error setting rlimit"
if [ "$BASE_IMAGE" = localhost/debian:bookworm ] && ! "${P[@]}" image exists "$BASE_IMAGE"; then
  command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
  rootfs="$(mktemp -d)"
  debootstrap --variant=minbase bookworm "$rootfs" >/dev/null
  tar -C "$rootfs" -c . | "${P[@]}" import - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
fi
build=(--network=host "${U[@]}" --build-arg "BASE_IMAGE=$BASE_IMAGE")
# This machine's CA bundle for pip (beside the image's own: ca-certificates replaces that file while installing).
[ -f /etc/ssl/certs/ca-certificates.crt ] && build+=(-v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro --build-arg PIP_CERT=/run/host-ca.crt)
indexes=""
for folder in /opt/pypi /opt/pypi-more; do  # local wheel indexes (torch's CUDA wheels: no multi-GB download)
  if [ -d "$folder/simple" ]; then build+=(-v "$folder:$folder:ro"); indexes="$indexes file://$folder/simple"; fi
done
[ -n "$indexes" ] && build+=(--build-arg "PIP_EXTRA_INDEX_URL=${indexes# }")
start=$(date +%s)
"${P[@]}" build "${build[@]}" -t "$IMAGE" .
echo "image-test: built $IMAGE in $(( $(date +%s) - start )) s; size $("${P[@]}" image inspect "$IMAGE" --format '{{.Size}}' | awk '{printf "%.2f GB", $1/1e9}')"

# As the chart runs it: a read-only root filesystem, a writable /tmp, shared memory for DataLoader workers.
options=("${U[@]}" --network=none --read-only --tmpfs /tmp:rw,size=4g,mode=1777 --shm-size=1g)
run=("${P[@]}" run --rm "${options[@]}")
[ "$("${run[@]}" --entrypoint id "$IMAGE" -u)" = 10001 ] || { echo "image-test: not running as uid 10001"; exit 1; }
start=$(date +%s)
"${run[@]}" "$IMAGE" demo --output /tmp/demo 2>&1 | tee /tmp/odeon-image-demo.log | tail -5
grep -q "final validation mIoU" /tmp/odeon-image-demo.log
echo "image-test: odeon demo ran as uid 10001 on a read-only root filesystem in $(( $(date +%s) - start )) s"
if "${run[@]}" --entrypoint sh "$IMAGE" -c 'touch /opt/odeon/x' 2>/dev/null; then
  echo "image-test: the root filesystem was writable"; exit 1
fi

# SIGTERM as Kubernetes sends it (to PID 1, tini): a training stops within its grace period with status
# 143 and its last checkpoint, and resumes with continue_training "auto".
data="$(mktemp -d)"
trap 'rm -rf "$data"; "${P[@]}" rm -f odeon-image-test >/dev/null 2>&1 || true' EXIT
chmod 777 "$data"
"${run[@]}" -v "$data:/data" --entrypoint python "$IMAGE" -c \
  "from odeon_job.commands.demo import write_demo; write_demo('/data')" >/dev/null
train=(-v "$data:/data" -e ODEON_CONFIG=/data/demo_config.json "$IMAGE" train --set output_setup.version_name=sigterm
       --set train_setup.continue_training=auto)
"${P[@]}" run -d "${options[@]}" --name odeon-image-test "${train[@]}" --set train_setup.epochs=50 >/dev/null
history="$data/runs/demo/sigterm/history_val.json"
for _ in $(seq 1 300); do
  [ -f "$history" ] && [ "$(python3 -c "import json; print(len(json.load(open('$history'))))")" -ge 2 ] && break
  sleep 1
done
start=$(date +%s.%N)
"${P[@]}" stop -t 30 odeon-image-test >/dev/null
took=$(python3 -c "print(round($(date +%s.%N) - $start, 1))")
status=$("${P[@]}" inspect odeon-image-test --format '{{.State.ExitCode}}')
"${P[@]}" logs odeon-image-test 2>&1 | tail -2
[ "$status" = 143 ] || { echo "image-test: exit status $status after SIGTERM, not 143"; exit 1; }
echo "image-test: SIGTERM: exit 143 after $took s"
epochs=$(( $(python3 -c "import json; print(len(json.load(open('$history'))))") + 1 ))
"${run[@]}" "${train[@]}" --set "train_setup.epochs=$epochs" 2>&1 | tail -1
[ "$(python3 -c "import json; print(len(json.load(open('$history'))))")" = "$epochs" ] \
  || { echo "image-test: the resumed training did not finish its epochs"; exit 1; }
echo "image-test: resumed to epoch $epochs"

# The README's `docker run` line: data mounted read-only, a host folder for the outputs, the configuration mounted
# as a file, --user a host user (here 4321, not the image's 10001): every file written is that user's.
owner=4321
mkdir -p "$data/user-runs" && chown "$owner:$owner" "$data/user-runs"
"${P[@]}" run --rm "${U[@]}" --network=none --read-only --tmpfs /tmp:rw,size=4g,mode=1777 --shm-size=1g \
  --user "$owner:$owner" -v "$data:/data:ro" -v "$data/user-runs:/runs" \
  -v "$data/demo_config.json:/etc/odeon/config.json:ro" -e ODEON_CONFIG=/etc/odeon/config.json \
  "$IMAGE" train --set output_setup.output_folder=/runs --set train_setup.epochs=1 2>&1 | tail -1
[ -f "$data/user-runs/demo/"*/config.json ] || { echo "image-test: the documented docker run wrote no run"; exit 1; }
strangers=$(find "$data/user-runs" ! -user "$owner" | head -3)
[ -z "$strangers" ] || { echo "image-test: files not owned by --user $owner: $strangers"; exit 1; }
echo "image-test: the README's docker run line wrote $(find "$data/user-runs" -type f | wc -l) files as uid $owner; passed"
