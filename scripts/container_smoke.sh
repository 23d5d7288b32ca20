#!/usr/bin/env bash
# Build and run the project's UNCHANGED Dockerfile with Debian's podman on a machine like our CI machines, where no
# container registry is reachable (../shared/research/containers.md). Every machine-specific step lives here,
# never in the Dockerfile:
#   - the base image `python:3.11-slim` is a stand-in made here: debootstrap bookworm + Debian's python3 (3.11) in a
#     venv on PATH, tagged localhost/python:3.11-slim so that `FROM python:3.11-slim` resolves locally;
#   - this sandbox intercepts HTTPS with its own CA: the host's CA bundle is copied into that base image, so pip
#     inside the build reaches PyPI;
#   - runc instead of crun (crun refuses the hybrid cgroup set-up), ulimits the host allows, --network host;
#   - torch comes from the CPU wheel already on this machine (WHEELS, mounted read-only into the build) instead of
#     PyTorch's CPU index, which the build cannot reach.
#
# Usage (as root; apt-get install podman runc debootstrap first, as .ci/run does):
#   scripts/container_smoke.sh base              make the stand-in base image if it is missing
#   scripts/container_smoke.sh build [TAG]       base, then build the project image (default $IMAGE)
#   scripts/container_smoke.sh run ARGS...       podman run with the ulimits this host allows, then ARGS
#                                                (add --network host: no bridge addresses are involved then)
#   scripts/container_smoke.sh podman ARGS...    podman on this script's storage and runtime
# Environment: CONTAINER_WORKDIR (image store and scratch, default /var/tmp/influence-explorer-podman; kept between
# runs, so only the first build on a machine makes the base), WHEELS (default /opt/wheels), IMAGE.
set -euo pipefail
cd "$(dirname "$0")/.."

W=${CONTAINER_WORKDIR:-/var/tmp/influence-explorer-podman}
WHEELS=${WHEELS:-/opt/wheels}
IMAGE=${IMAGE:-localhost/influence-explorer:smoke}
BASE=localhost/python:3.11-slim
mkdir -p "$W"
# --root/--runroot as flags: a CONTAINERS_STORAGE_CONF made every `podman run` hang 20 s on exit.
P=(podman --root "$W/root" --runroot "$W/run" --runtime runc)

say() { printf '[container_smoke %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

make_base() {
  if "${P[@]}" image exists "$BASE"; then
    say "base $BASE already there"
    return
  fi
  local rootfs="$W/rootfs" mirror
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  say "debootstrap bookworm from $mirror"
  rm -rf "$rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$W/debootstrap.log" 2>&1 \
    || { tail -20 "$W/debootstrap.log" >&2; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  mkdir -p "$rootfs/usr/local/share/ca-certificates" "$rootfs/etc/ssl/certs"
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  say "podman import localhost/debian:bookworm"
  tar -C "$rootfs" -c . | "${P[@]}" import --quiet \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["/bin/bash"]' - localhost/debian:bookworm >/dev/null
  rm -rf "$rootfs"
  say "build the stand-in $BASE"
  # Like the official image: python/pip on PATH (a venv, which also avoids Debian's PEP 668 refusal), C.UTF-8.
  mkdir -p "$W/base-context"
  cat >"$W/base-context/Containerfile" <<'EOF'
FROM localhost/debian:bookworm
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* && python3 -m venv /usr/local/pyenv \
 && /usr/local/pyenv/bin/pip install --no-cache-dir -U pip setuptools wheel
ENV PATH=/usr/local/pyenv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
CMD ["python3"]
EOF
  "${P[@]}" build --network host --pull=never -q -t "$BASE" "$W/base-context" >/dev/null
}

build_image() {
  local tag=${1:-$IMAGE}
  make_base
  ls "$WHEELS"/torch-*.whl >/dev/null 2>&1 || { say "no torch wheel in $WHEELS"; exit 1; }
  say "podman build -t $tag (torch from $WHEELS)"
  # --format docker keeps the HEALTHCHECK (the OCI format drops it).
  "${P[@]}" build --network host --pull=never --format docker \
    --volume "$WHEELS:/wheels:ro" --build-arg "WHEEL_SOURCES=--find-links /wheels" \
    -t "$tag" .
  "${P[@]}" image prune -f >/dev/null 2>&1 || true  # the previous build's layers, now untagged
}

cmd=${1:-}
shift || true
case "$cmd" in
  base) make_base ;;
  build) build_image "$@" ;;
  run) exec "${P[@]}" run --ulimit nofile=20000:20000 --ulimit nproc=32768:32768 "$@" ;;
  podman) exec "${P[@]}" "$@" ;;
  *) sed -n '2,/^set -e/p' "$0" | sed '$d' >&2; exit 2 ;;
esac
