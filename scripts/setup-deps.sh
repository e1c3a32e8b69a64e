#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine with Go and a running
# Docker Engine. Idempotent and quick when everything is present.
set -euo pipefail
export PATH="$PATH:$(go env GOPATH)/bin"

need_apt=()
for pkg in chromium rclone debootstrap jupyter-notebook wrk; do
  # Installed, not merely known: a removed package keeps a dpkg status
  # (its configuration files) that dpkg -s accepts.
  [ "$(dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ] || need_apt+=("$pkg")
done
# apt waits on the network and the disk, the Go builds below on the CPU: on
# a new machine they run side by side.
apt_pid=""
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "apt-get install ${need_apt[*]}"
  (
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  ) &
  apt_pid=$!
fi

command -v staticcheck >/dev/null || go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
# versitygw, the tests' S3 server: the same static build (cached in
# ~/.cache/idepool) the local S3 image gets, so a new machine compiles it
# once, not twice.
if ! command -v versitygw >/dev/null; then
  bin=$(S3_NO_IMAGE=1 bash "$(dirname "$0")/../deploy/build-s3.sh" | tail -1)
  mkdir -p "$(go env GOPATH)/bin"
  install -m 0755 "$bin" "$(go env GOPATH)/bin/versitygw"
fi

if [ -n "$apt_pid" ] && ! wait "$apt_pid"; then
  echo "apt-get install ${need_apt[*]} failed" >&2
  exit 1
fi

# Every local container's agent watches its workspace with inotify: the
# default of 128 instances per user is too few for a host running a pool of
# them (see docs/operations.md).
if [ "$(cat /proc/sys/fs/inotify/max_user_instances 2>/dev/null || echo 0)" -lt 8192 ]; then
  sysctl -qw fs.inotify.max_user_instances=8192 || echo "warning: cannot raise fs.inotify.max_user_instances"
fi
if [ "$(cat /proc/sys/fs/inotify/max_user_watches 2>/dev/null || echo 0)" -lt 524288 ]; then
  sysctl -qw fs.inotify.max_user_watches=524288 || echo "warning: cannot raise fs.inotify.max_user_watches"
fi

if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  state=$(docker info --format '{{.Swarm.LocalNodeState}}')
  if [ "$state" != "active" ]; then
    echo "docker swarm init"
    docker swarm init --advertise-addr 127.0.0.1 >/dev/null
  fi
fi
