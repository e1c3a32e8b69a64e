#!/usr/bin/env bash
# Builds idepool's images on this machine, without any registry: both are
# FROM scratch around one static binary of ./cmd/idepool.
#
#   idepool:dev        the orchestrator (entrypoint: idepool, command: serve)
#   idepool-ide:test   the test IDE image: the same binary as `idepool agent`,
#                      whose built-in placeholder workload serves the routes
#
# Idempotent and quick: the binary is rebuilt with Go's build cache and an
# image only when its binary changed (its sha256 is an image label).
#
# Environment: IDEPOOL_PKG (./cmd/idepool), IDEPOOL_IMAGE (idepool:dev),
# IDEPOOL_IDE_IMAGE (idepool-ide:test), IDEPOOL_VERSION (git describe or dev).
set -euo pipefail
cd "$(dirname "$0")/.."

pkg="${IDEPOOL_PKG:-./cmd/idepool}"
image="${IDEPOOL_IMAGE:-idepool:dev}"
ide_image="${IDEPOOL_IDE_IMAGE:-idepool-ide:test}"
version="${IDEPOOL_VERSION:-$(git describe --always --dirty 2>/dev/null || echo dev)}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$work/idepool" "$pkg"
sum=$(sha256sum "$work/idepool" | cut -c1-16)

# build_image TAG DOCKERFILE-BODY: builds TAG from $work unless it already
# holds this binary.
build_image() {
  local tag=$1 body=$2
  local have
  have=$(docker image inspect --format '{{index .Config.Labels "idepool.binary-sha256"}}' "$tag" 2>/dev/null || true)
  if [ "$have" = "$sum" ]; then
    echo "$tag up to date ($sum)"
    return
  fi
  printf 'FROM scratch\n%s\nLABEL idepool.binary-sha256="%s" org.opencontainers.image.version="%s"\n' "$body" "$sum" "$version" >"$work/Dockerfile"
  # The legacy builder: FROM scratch needs no pull and no BuildKit image.
  local out
  if ! out=$(DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$work" 2>&1); then
    echo "$out" >&2
    exit 1
  fi
  echo "built $tag ($sum)"
}

# A minimal root: CA certificates (S3 over TLS), /tmp, and for the IDE
# image its workspace and agent state directories owned by the IDE user.
mkdir -p "$work/root/etc/ssl/certs" "$work/root/tmp" "$work/ide/workspace" "$work/ide/var/lib/idepool-agent" "$work/ide/tmp"
chmod 1777 "$work/root/tmp" "$work/ide/tmp"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$work/root/etc/ssl/certs/"
else
  echo "warning: /etc/ssl/certs/ca-certificates.crt missing; images have no CA certificates" >&2
fi
printf 'root:x:0:0:root:/:/idepool\nide:x:1000:1000:ide:/workspace:/idepool\n' >"$work/root/etc/passwd"
printf 'root:x:0:\nide:x:1000:\n' >"$work/root/etc/group"

# idepool runs as root: it talks to /var/run/docker.sock, mounted from a
# manager node.
build_image "$image" 'COPY root /
COPY idepool /idepool
ENV IDEPOOL_IN_CONTAINER=1
ENTRYPOINT ["/idepool"]
CMD ["serve"]'

# The IDE runs as an unprivileged user (no sudo, no shell in the image).
build_image "$ide_image" 'COPY root /
COPY --chown=1000:1000 ide /
COPY idepool /idepool
ENV HOME=/workspace
WORKDIR /workspace
USER 1000:1000
ENTRYPOINT ["/idepool", "agent"]'
