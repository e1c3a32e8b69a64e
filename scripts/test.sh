#!/usr/bin/env bash
# The whole test suite, from a fresh machine with Go and a running Docker
# Engine: installs and starts everything the tests need (Swarm mode, the S3
# server, Chromium, Traefik, the images), then gofmt, go vet, staticcheck,
# go test -race (end-to-end tests included) and the benchmarks that print
# the performance figures.
#
#   bash scripts/test.sh            everything
#   SKIP_BENCH=1 bash scripts/test.sh   without the benchmarks
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:$(go env GOPATH)/bin"
start=$(date +%s)
step() { echo "==> [$(( $(date +%s) - start ))s] $*"; }
logs=$(mktemp -d)

step "system packages, tools, Swarm mode"
bash scripts/setup-deps.sh

# Traefik builds from the Go module proxy (minutes, cached afterwards): start
# it now, beside the checks.
traefik_pid=""
if [ -f deploy/build-traefik.sh ]; then
  step "building Traefik in the background (log: $logs/traefik.log)"
  bash deploy/build-traefik.sh >"$logs/traefik.log" 2>&1 &
  traefik_pid=$!
fi

# The local S3 store's image for deploy/setup-local.sh, likewise.
s3img_pid=""
if [ -f deploy/build-s3.sh ]; then
  step "building the local S3 image in the background (log: $logs/s3img.log)"
  bash deploy/build-s3.sh >"$logs/s3img.log" 2>&1 &
  s3img_pid=$!
fi

# The Debian IDE image (debootstrap + docker import; minutes the first time,
# cached in ~/.cache/idepool) also builds beside the checks.
debian_pid=""
if [ -f deploy/ide/build-debian.sh ]; then
  step "building the Debian IDE image in the background (log: $logs/debian.log)"
  bash deploy/ide/build-debian.sh >"$logs/debian.log" 2>&1 &
  debian_pid=$!
fi

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' | grep -v '^tools/') 2>/dev/null || true)
if [ -n "$unformatted" ]; then echo "gofmt needed on:"; echo "$unformatted"; exit 1; fi

step "shell scripts (bash -n)"
for f in $(git ls-files '*.sh') .ci/run; do bash -n "$f"; done

step "go vet"
go vet ./...

step "go mod tidy -diff (go.mod and go.sum as tidy leaves them)"
go mod tidy -diff

step "staticcheck"
staticcheck ./...

if [ -f deploy/build-images.sh ]; then
  step "images"
  bash deploy/build-images.sh
fi

if [ -n "$traefik_pid" ]; then
  step "waiting for Traefik"
  if ! wait "$traefik_pid"; then
    echo "Traefik build failed:"; tail -40 "$logs/traefik.log"; exit 1
  fi
  tail -3 "$logs/traefik.log"
fi

if [ -n "$s3img_pid" ]; then
  step "waiting for the local S3 image"
  if ! wait "$s3img_pid"; then
    echo "local S3 image build failed:"; tail -40 "$logs/s3img.log"; exit 1
  fi
fi

if [ -n "$debian_pid" ]; then
  step "waiting for the Debian IDE image"
  if ! wait "$debian_pid"; then
    echo "Debian IDE image build failed:"; tail -40 "$logs/debian.log"; exit 1
  fi
  tail -3 "$logs/debian.log"
fi

step "go test -race (unit, integration and end-to-end)"
set +e
CI="${CI:-}" IDEPOOL_E2E=1 go test -race -timeout 25m -count=1 ./... 2>&1 | tee "$logs/test.log"
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" -ne 0 ]; then
  echo "go test failed (exit $rc):"
  grep -E -- '--- FAIL|^FAIL|panic:' "$logs/test.log" | head -50
  exit "$rc"
fi

if [ -z "${SKIP_BENCH:-}" ]; then
  step "benchmarks (figures for the issues' goals)"
  go test -run '^$' -bench 'BenchmarkClaimLatency' -benchtime 1x -timeout 15m ./server/
  go test -run '^$' -bench 'BenchmarkBurst' -benchtime 1x -timeout 10m ./pool/
  go test -run '^$' -bench 'BenchmarkClaim$|BenchmarkClaimParallel' -benchtime 2000x ./pool/
  go test -run '^$' -bench . -benchtime 1x -timeout 10m ./wsync/
  go test -run '^$' -bench 'BenchmarkAssign' -benchtime 2000x ./control/ ./agent/
  go test -run '^$' -bench 'BenchmarkProxiedRequest' -benchtime 2000x ./proxy/
  IDEPOOL_E2E=1 go test -run '^$' -bench . -benchtime 1x -timeout 20m ./e2e/swarm/
fi
step "done"
