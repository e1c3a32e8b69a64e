#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs and starts everything
# the tests need (Swarm mode, the S3 server, Chromium, Traefik, images), then
# gofmt, go vet, staticcheck and go test -race.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:$(go env GOPATH)/bin"
export CI="${CI:-}"
start=$(date +%s)
step() { echo "==> [$(( $(date +%s) - start ))s] $*"; }

step "system packages"
bash scripts/setup-deps.sh

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' | grep -v '^tools/') 2>/dev/null || true)
if [ -n "$unformatted" ]; then echo "gofmt needed on:"; echo "$unformatted"; exit 1; fi

step "go vet"
go vet ./...

step "staticcheck"
staticcheck ./...

if [ -x deploy/build-images.sh ] || [ -f deploy/build-images.sh ]; then
  step "images"
  bash deploy/build-images.sh
fi

step "go test -race"
set +e
go test -race -timeout 25m -count=1 ./... 2>&1 | tee /tmp/idepool-test.log
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" -ne 0 ]; then
  echo "go test failed (exit $rc):"
  grep -E -- '--- FAIL|^FAIL|panic:' /tmp/idepool-test.log | head -50
  exit "$rc"
fi
step "done"
