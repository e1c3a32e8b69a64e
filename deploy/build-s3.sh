#!/usr/bin/env bash
# Builds idepool-s3:local: versitygw (the S3-compatible server idepool embeds
# for its zero-config run), static, FROM scratch, for the local stack of
# deploy/setup-local.sh. Built from the Go module proxy (no registry), cached
# in ~/.cache/idepool/versitygw-<version>; the first build takes about 2
# minutes on a 2-core machine, later runs are instant (the image is rebuilt
# only when the binary changed).
#
# The image holds an empty directory /data/workspaces: with versitygw's posix
# backend a bucket is a directory, and an empty named volume mounted on /data
# is filled from the image on first use, so the bucket "workspaces" exists
# without an S3 client.
#
#   deploy/build-s3.sh                  # binary + image idepool-s3:local
#   S3_NO_IMAGE=1 deploy/build-s3.sh    # the binary only (prints its path)
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(go list -m -f '{{.Version}}' github.com/versity/versitygw) # idepool's go.mod requires it
image="idepool-s3:local"
bucket="workspaces"
cache="${IDEPOOL_CACHE:-$HOME/.cache/idepool}"
bin="$cache/versitygw-$version"

if [ ! -x "$bin" ]; then
  echo "building versitygw $version into $bin (about 2 min, once)"
  mkdir -p "$cache"
  tmp="$bin.tmp.$$"
  trap 'rm -f "$tmp"' EXIT
  # A tool of idepool's module (go.mod's tool line): built with idepool's
  # versions of its dependencies and the same flags as the checks and the
  # images, so a new machine compiles what it shares with idepool (the
  # embedded S3 server, the AWS SDK, …) once for both.
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp" github.com/versity/versitygw/cmd/versitygw
  mv "$tmp" "$bin"
  trap - EXIT
fi

if [ -n "${S3_NO_IMAGE:-}" ]; then
  echo "$bin"
  exit 0
fi

sum=$(sha256sum "$bin" | cut -c1-16)
have=$(docker image inspect --format '{{index .Config.Labels "idepool.binary-sha256"}}' "$image" 2>/dev/null || true)
if [ "$have" = "$sum" ]; then
  echo "$image up to date"
  exit 0
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$bin" "$ctx/versitygw"
mkdir -p "$ctx/root/data/$bucket" "$ctx/root/tmp"
chmod 1777 "$ctx/root/tmp"
printf 'FROM scratch\nCOPY root /\nCOPY versitygw /versitygw\nLABEL idepool.binary-sha256="%s" org.opencontainers.image.version="%s"\nENTRYPOINT ["/versitygw"]\n' \
  "$sum" "$version" >"$ctx/Dockerfile"
# The legacy builder: FROM scratch needs no pull and no BuildKit image.
if ! out=$(DOCKER_BUILDKIT=0 docker build -q -t "$image" "$ctx" 2>&1); then
  echo "$out" >&2
  exit 1
fi
echo "built $image"
