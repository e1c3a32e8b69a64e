#!/usr/bin/env bash
# Builds the Debian IDE image on this machine, with no registry: a
# debootstrap'ed Debian root filesystem with real IDE software installed by
# apt, imported with `docker import`, plus the static idepool binary.
#
#   TigerVNC + openbox + noVNC/websockify   route vnc
#   Jupyter Notebook                        route code
#   shellinabox                             route terminal
#
# (the workloads are declared in deploy/ide/profiles.json, profile debian-ide)
#
# Three cached stages, so a re-run is quick:
#   1. the minbase root filesystem, a tarball under $cache (per suite,
#      architecture and mirror);
#   2. the image with the packages installed, tagged
#      idepool-ide-debian-base:<hash of the recipe> (this script's rootfs
#      function, the package list, the files under deploy/ide/rootfs);
#   3. $IMAGE: the base plus /usr/local/bin/idepool, rebuilt only when the
#      binary or the base changed (both are image labels).
#
# Needs root (debootstrap, chroot, mount), debootstrap, Go and Docker.
# Environment: IDEPOOL_DEBIAN_IMAGE (idepool-ide-debian:latest),
# DEBIAN_SUITE (bookworm), DEBIAN_MIRROR (the mirror apt uses here),
# IDEPOOL_CACHE (~/.cache/idepool), IDEPOOL_VERSION (git describe or dev).
set -euo pipefail
start=$SECONDS
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

image=${IDEPOOL_DEBIAN_IMAGE:-idepool-ide-debian:latest}
suite=${DEBIAN_SUITE:-bookworm}
arch=$(dpkg --print-architecture)
cache=${IDEPOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/idepool}
version=${IDEPOOL_VERSION:-$(git -C "$repo" describe --always --dirty 2>/dev/null || echo dev)}

# The mirror apt already uses on this machine (e.g. http://deb.debian.org/debian/).
mirror=${DEBIAN_MIRROR:-$(apt-get indextargets --format '$(REPO_URI)' "Release: $suite" 'Identifier: Packages' 2>/dev/null | head -n1)}
mirror=${mirror:-http://deb.debian.org/debian/}
mirror=${mirror%/}
security_mirror=${mirror%/debian}/debian-security

# --no-install-recommends keeps the image lean; these are the packages
# whose names Debian bookworm uses (apt-cache policy on this machine).
packages=(
  ca-certificates
  tigervnc-standalone-server # Xvnc: X server and VNC server in one
  openbox                    # the window manager
  xterm                      # a terminal on the desktop
  novnc                      # the HTML5 VNC client (web files)
  websockify                 # serves noVNC and bridges its websocket to Xvnc
  jupyter-notebook           # classic Jupyter Notebook 6 (+ python3-notebook, ipykernel)
  shellinabox                # the web terminal
  procps                     # ps/kill for users of the terminal
)

for tool in debootstrap docker go chroot mount flock; do
  command -v "$tool" >/dev/null || { echo "build-debian.sh: $tool is missing" >&2; exit 1; }
done
if [ "$(id -u)" != 0 ]; then
  echo "build-debian.sh: needs root (debootstrap, chroot and mounts)" >&2
  exit 1
fi

mkdir -p "$cache"
# One build at a time (tests may call this script concurrently).
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
    echo "build-debian.sh: left $work behind (a mount would not go away)" >&2
  fi
}
trap cleanup EXIT

# Stage 1: the minbase root filesystem.
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

# install_rootfs DIR: everything done inside the root filesystem. It is part
# of the recipe hash, so any change to it rebuilds the base image.
install_rootfs() {
  local root=$1
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  # No daemons start during the build.
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 755 "$root/usr/sbin/policy-rc.d"
  # Slim: no docs, man pages or translations (copyright files stay).
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
  # Downloaded .debs are kept between builds.
  mount --bind "$cache/apt-archives" "$root/var/cache/apt/archives"
  mounts+=("$root/var/cache/apt/archives")
  chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 \
    /bin/sh -euc '
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 "$@"
      useradd --uid 1000 --user-group --create-home --home-dir /home/ide --shell /bin/bash ide
      # Unprivileged means no way up: no sudo, no setuid or setgid programs.
      if command -v sudo >/dev/null; then echo "sudo must not be installed" >&2; exit 1; fi
      find / -xdev -type f -perm /6000 -exec chmod ug-s {} +
    ' sh "${packages[@]}" >"$work/apt.log" 2>&1 || {
    tail -n 40 "$work/apt.log" >&2
    return 1
  }
  umount "$root/var/cache/apt/archives" "$root/proc"
  mounts=()
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/apt "$root"/var/log/dpkg.log \
    "$root/usr/sbin/policy-rc.d" "$root"/tmp/* "$root"/root/.cache
  # What minbase installed before the dpkg excludes existed.
  find "$root/usr/share/doc" -type f ! -name copyright -delete
  rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/*
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  : >"$root/etc/resolv.conf"
  mkdir -p "$root/workspace" "$root/var/lib/idepool-agent"
  chown 1000:1000 "$root/workspace" "$root/var/lib/idepool-agent"
  # Xvnc runs as ide; the X socket directory must exist, sticky, root's.
  mkdir -p "$root/tmp/.X11-unix"
  chmod 1777 "$root/tmp/.X11-unix"
  # Our files: the noVNC start page, which points noVNC at the route prefix.
  cp -a "$here/rootfs/." "$root/"
  local f
  for f in "$root"/usr/share/novnc/*; do
    ln -sfn "/usr/share/novnc/${f##*/}" "$root/usr/share/idepool/novnc/${f##*/}"
  done
  rm -f "$root/usr/share/idepool/novnc/index.html"
  cp "$here/rootfs/usr/share/idepool/novnc/index.html" "$root/usr/share/idepool/novnc/index.html"
}

recipe=$( {
  printf '%s\n' "$suite" "$arch" "$mirror" "${packages[@]}"
  declare -f install_rootfs
  (cd "$here/rootfs" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
} | sha256sum | cut -c1-16)
base="idepool-ide-debian-base:$recipe"

# Stage 2: the base image with the packages.
if docker image inspect "$base" >/dev/null 2>&1; then
  echo "base image $base up to date"
else
  echo "installing ${packages[*]} ..."
  mkdir "$work/rootfs"
  tar -C "$work/rootfs" --numeric-owner -xf "$minbase"
  install_rootfs "$work/rootfs"
  echo "importing $base ..."
  tar -C "$work/rootfs" --numeric-owner -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8 HOME=/home/ide USER=ide SHELL=/bin/bash' \
    --change 'ENV IDEPOOL_WORKSPACE=/workspace IDEPOOL_STATE_DIR=/var/lib/idepool-agent' \
    --change 'USER ide' \
    --change 'WORKDIR /workspace' \
    --change 'ENTRYPOINT ["/usr/local/bin/idepool","agent"]' \
    --change "LABEL idepool.recipe=$recipe" \
    --message "debootstrap $suite minbase + ${packages[*]}" \
    - "$base" >/dev/null
  rm -rf "$work/rootfs"
  # Older bases are garbage now (kept if a container still uses one).
  docker image ls --format '{{.Repository}}:{{.Tag}}' idepool-ide-debian-base |
    grep -vx "$base" | xargs -r docker image rm >/dev/null 2>&1 || true
fi

# Stage 3: the image with the binary.
mkdir -p "$work/ctx"
(cd "$repo" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$work/ctx/idepool" ./cmd/idepool)
sum=$(sha256sum "$work/ctx/idepool" | cut -c1-16)
have=$(docker image inspect --format '{{index .Config.Labels "idepool.binary-sha256"}} {{index .Config.Labels "idepool.recipe"}}' "$image" 2>/dev/null || true)
if [ "$have" = "$sum $recipe" ]; then
  echo "$image up to date (binary $sum, recipe $recipe)"
else
  cat >"$work/ctx/Dockerfile" <<EOF
FROM $base
COPY --chown=0:0 idepool /usr/local/bin/idepool
LABEL idepool.binary-sha256="$sum" idepool.recipe="$recipe" org.opencontainers.image.version="$version"
EOF
  # The legacy builder uses the local base image and never pulls.
  old=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
  DOCKER_BUILDKIT=0 docker build -q -t "$image" "$work/ctx" >"$work/build.log" 2>&1 || {
    cat "$work/build.log" >&2
    exit 1
  }
  # The image it replaced is garbage now (kept if a container uses it).
  if [ -n "$old" ] && [ "$old" != "$(docker image inspect --format '{{.Id}}' "$image")" ]; then
    docker image rm "$old" >/dev/null 2>&1 || true
  fi
  echo "built $image (binary $sum, recipe $recipe)"
fi

size=$(docker image inspect --format '{{.Size}}' "$image")
echo "$image: $((size / 1024 / 1024)) MiB; build took $((SECONDS - start)) s"
