#!/usr/bin/env bash
# Builds the node image of the local test cluster (deploy/cluster-local.sh):
# a Debian root filesystem with Docker, run as a Docker-in-Docker Swarm node.
# No registry and no Dockerfile: debootstrap'ed Debian minbase + apt packages,
# imported with `docker import`.
#
# Two cached stages, so a re-run takes a second:
#   1. the minbase root filesystem tarball under $cache, the same file
#      deploy/ide/build-debian.sh makes and names (per suite, architecture
#      and mirror), so whichever script runs first builds it for both;
#   2. $IMAGE, tagged :<hash of the recipe> and :latest (the recipe: this
#      script's rootfs function, the package list, the entrypoint).
#
# Needs root (debootstrap, chroot, mount), debootstrap and Docker.
# Environment: IDEPOOL_NODE_IMAGE (idepool-node), DEBIAN_SUITE (bookworm),
# DEBIAN_MIRROR (the mirror apt uses here), IDEPOOL_CACHE (~/.cache/idepool).
set -euo pipefail
start=$SECONDS

image=${IDEPOOL_NODE_IMAGE:-idepool-node}
suite=${DEBIAN_SUITE:-bookworm}
arch=$(dpkg --print-architecture)
cache=${IDEPOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/idepool}

# The mirror apt already uses on this machine (as build-debian.sh does).
mirror=${DEBIAN_MIRROR:-$(apt-get indextargets --format '$(REPO_URI)' "Release: $suite" 'Identifier: Packages' 2>/dev/null | head -n1)}
mirror=${mirror:-http://deb.debian.org/debian/}
mirror=${mirror%/}
security_mirror=${mirror%/debian}/debian-security

packages=(
  docker.io       # dockerd, containerd, runc, the CLI
  iptables        # dockerd's networking
  ca-certificates # TLS to a registry, when there is one
  iproute2        # ip: to inspect and break the node's network in tests
  procps          # ps/kill
  curl            # deploy/setup-local.sh, run inside node 1 by cluster-local.sh up --stack
)

for tool in debootstrap docker chroot mount flock; do
  command -v "$tool" >/dev/null || { echo "build-node.sh: $tool is missing" >&2; exit 1; }
done
if [ "$(id -u)" != 0 ]; then
  echo "build-node.sh: needs root (debootstrap, chroot and mounts)" >&2
  exit 1
fi

mkdir -p "$cache"
# One build at a time (tests may call this script concurrently); the same
# lock as build-debian.sh, which writes the same minbase tarball.
exec 9>"$cache/build-debian.lock"
flock 9

work=$(mktemp -d "$cache/work.XXXXXX")
mounts=()
cleanup() {
  local failed=0 i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
    umount "${mounts[i]}" 2>/dev/null || umount -l "${mounts[i]}" || failed=1
  done
  # Never delete through a mount that is still there.
  if [ "$failed" = 0 ] && ! grep -q " $work/" /proc/mounts; then
    rm -rf "$work"
  else
    echo "build-node.sh: left $work behind (a mount would not go away)" >&2
  fi
}
trap cleanup EXIT

# The node's entrypoint. Without --privileged (which fails on this kind of
# machine: "unable to apply caps") /sys and the cgroup mounts arrive
# read-only; dockerd needs them writable. Swarm must not try a registry for
# images loaded with `docker load`: DOCKER_SERVICE_PREFER_OFFLINE_IMAGE.
entrypoint='#!/bin/sh
set -e
mount -o remount,rw /sys 2>/dev/null || mount -o remount,bind,rw /sys
awk '\''$3 == "cgroup" || $3 == "cgroup2" || ($3 == "tmpfs" && $2 == "/sys/fs/cgroup") { print $2 }'\'' /proc/self/mounts |
  while read -r m; do mount -o remount,bind,rw "$m" 2>/dev/null || true; done
export DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1
rm -f /var/run/docker.pid /run/docker/containerd/containerd.pid
exec dockerd --storage-driver overlay2 "$@"
'

# install_rootfs DIR: everything done inside the root filesystem. It is part
# of the recipe hash, so any change to it rebuilds the image.
install_rootfs() {
  local root=$1
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 755 "$root/usr/sbin/policy-rc.d"
  cat >"$root/etc/dpkg/dpkg.cfg.d/idepool-slim" <<'EOF'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
EOF
  cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security_mirror $suite-security main
EOF
  mkdir -p "$cache/apt-archives/partial"
  mount -t proc proc "$root/proc"
  mounts+=("$root/proc")
  mount --bind "$cache/apt-archives" "$root/var/cache/apt/archives"
  mounts+=("$root/var/cache/apt/archives")
  chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 \
    /bin/sh -euc '
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 "$@"
    ' sh "${packages[@]}" >"$work/apt.log" 2>&1 || {
    tail -n 40 "$work/apt.log" >&2
    return 1
  }
  umount "$root/var/cache/apt/archives" "$root/proc"
  mounts=()
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/apt "$root"/var/log/dpkg.log \
    "$root/usr/sbin/policy-rc.d" "$root"/tmp/* "$root"/root/.cache
  find "$root/usr/share/doc" -type f ! -name copyright -delete
  rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/*
  : >"$root/etc/resolv.conf"
  printf '%s' "$entrypoint" >"$root/usr/local/bin/idepool-node"
  chmod 755 "$root/usr/local/bin/idepool-node"
}

recipe=$( {
  printf '%s\n' "$suite" "$arch" "$mirror" "${packages[@]}" "$entrypoint"
  declare -f install_rootfs
} | sha256sum | cut -c1-16)

if docker image inspect "$image:$recipe" >/dev/null 2>&1; then
  docker tag "$image:$recipe" "$image:latest"
  echo "$image:$recipe up to date"
  exit 0
fi

# Stage 1: the minbase root filesystem (shared with build-debian.sh).
mirror_key=$(printf '%s' "$mirror" | sha256sum | cut -c1-8)
minbase="$cache/debian-$suite-$arch-minbase-$mirror_key.tar"
if [ ! -s "$minbase" ]; then
  echo "debootstrap $suite ($arch, minbase) from $mirror ..."
  debootstrap --variant=minbase --arch="$arch" "$suite" "$work/minbase" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    exit 1
  }
  tar -C "$work/minbase" --numeric-owner -cf "$minbase.tmp" .
  mv "$minbase.tmp" "$minbase"
  rm -rf "$work/minbase"
else
  echo "minbase root filesystem cached: $minbase"
fi

# Stage 2: the node image.
echo "installing ${packages[*]} ..."
mkdir "$work/rootfs"
tar -C "$work/rootfs" --numeric-owner -xf "$minbase"
install_rootfs "$work/rootfs"
echo "importing $image:$recipe ..."
tar -C "$work/rootfs" --numeric-owner -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'VOLUME /var/lib/docker' \
  --change 'ENTRYPOINT ["/usr/local/bin/idepool-node"]' \
  --change "LABEL idepool.recipe=$recipe" \
  --message "debootstrap $suite minbase + ${packages[*]}" \
  - "$image:$recipe" >/dev/null
docker tag "$image:$recipe" "$image:latest"
# Older node images are garbage now (kept if a container still uses one).
docker image ls --format '{{.Repository}}:{{.Tag}}' "$image" |
  grep -vx -e "$image:$recipe" -e "$image:latest" | xargs -r docker image rm >/dev/null 2>&1 || true
size=$(docker image inspect --format '{{.Size}}' "$image:$recipe")
echo "$image:$recipe: $((size / 1024 / 1024)) MiB; build took $((SECONDS - start)) s"
