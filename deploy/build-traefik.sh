#!/usr/bin/env bash
# Builds Traefik from the Go module proxy (tools/traefik is its own module, so
# the main module never depends on Traefik), caches the binary, and wraps it
# in a FROM-scratch image. Traefik is neither in Debian nor pullable here.
#
#   deploy/build-traefik.sh            # binary + image idepool-traefik:v3.6.12
#   TRAEFIK_NO_IMAGE=1 deploy/build-traefik.sh   # binary only
#
# The first build takes 3-5 minutes and about 3 GB of memory; later runs are
# instant (the binary is cached, the image is rebuilt only when missing or
# older than the binary).
set -euo pipefail
cd "$(dirname "$0")/.."

version=v3.6.12
cache="${IDEPOOL_CACHE:-$HOME/.cache/idepool}"
bin="$cache/traefik-$version"
image="idepool-traefik:$version"

if [ ! -x "$bin" ]; then
  mkdir -p "$cache"
  echo "building traefik $version into $bin (3-5 min)"
  tmp="$bin.tmp.$$"
  # No GOGC: one in the environment turns off the compiler's larger
  # starting heap (deploy/kubernetes/build.sh says more).
  (cd tools/traefik && CGO_ENABLED=0 go build -p "${GOMAXPROCS:-2}" -trimpath \
    -ldflags "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$version" \
    -o "$tmp" github.com/traefik/traefik/v3/cmd/traefik)
  mv "$tmp" "$bin"
fi

if [ -n "${TRAEFIK_NO_IMAGE:-}" ]; then
  echo "$bin"
  exit 0
fi

if ! command -v docker >/dev/null || ! docker info >/dev/null 2>&1; then
  echo "docker not available: built $bin, no image" >&2
  exit 0
fi

bin_sum=$(sha256sum "$bin" | cut -c1-16)
have=$(docker image inspect --format '{{index .Config.Labels "idepool.binary-sha256"}}' "$image" 2>/dev/null || true)
if [ "$have" = "$bin_sum" ]; then
  echo "$image up to date"
  exit 0
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$bin" "$ctx/traefik"
mkdir -p "$ctx/etc/ssl/certs"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then cp /etc/ssl/certs/ca-certificates.crt "$ctx/etc/ssl/certs/"; fi
cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM scratch
COPY etc /etc
COPY traefik /traefik
LABEL idepool.binary-sha256="$bin_sum" org.opencontainers.image.version="$version"
ENTRYPOINT ["/traefik"]
DOCKERFILE
if ! out=$(DOCKER_BUILDKIT=0 docker build -q -t "$image" "$ctx" 2>&1); then
  echo "$out" >&2
  exit 1
fi
echo "built $image"
