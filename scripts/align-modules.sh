#!/usr/bin/env bash
# Checks that idepool's module and the modules of the tools it builds from the
# Go module proxy (tools/kubernetes, tools/helm, tools/traefik) use one
# version of every module that packages they all compile come from. Go's
# build cache then compiles a package shared by two of them once: on a new
# machine that is most of client-go, the Kubernetes API types, gRPC and the
# AWS SDK, minutes of CPU (scripts/test.sh builds them one after the other
# for that). With --fix it raises each such module to the highest version
# any of them requires, in all of them, and tidies them.
#
#   bash scripts/align-modules.sh          # check (CI)
#   bash scripts/align-modules.sh --fix    # after a `go get` in any of them
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
fix=${1:-}
names=(main kube helm traefik)
declare -A dir=([main]=. [kube]=tools/kubernetes [helm]=tools/helm [traefik]=tools/traefik)
declare -A pkgs=([main]="-test ./... github.com/versity/versitygw/cmd/versitygw" [kube]=.
  [helm]=helm.sh/helm/v3/cmd/helm [traefik]=github.com/traefik/traefik/v3/cmd/traefik)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Each non-standard package a module builds, with the module version it
# comes from (a replacement's, where one applies).
format='{{if not .Standard}}{{.ImportPath}} {{with .Module}}{{with .Replace}}{{.Path}}@{{.Version}}{{else}}{{.Path}}@{{.Version}}{{end}}{{end}}{{end}}'

for round in 1 2 3 4 5; do
  for n in "${names[@]}"; do
    # shellcheck disable=SC2086 # the package patterns are words
    (cd "$root/${dir[$n]}" && CGO_ENABLED=0 go list -deps -f "$format" ${pkgs[$n]} | awk 'NF == 2' | sort -u) >"$tmp/$n"
  done
  # Packages built by more than one, then their modules' versions.
  cat "$tmp"/{main,kube,helm,traefik} | cut -d' ' -f1 | sort | uniq -d >"$tmp/shared"
  awk 'NR == FNR { shared[$1] = 1; next } ($1 in shared) { print $2 }' "$tmp/shared" "$tmp"/{main,kube,helm,traefik} |
    sed 's/@/ /' | sort -u >"$tmp/versions"
  cut -d' ' -f1 "$tmp/versions" | uniq -d >"$tmp/differ"
  if [ ! -s "$tmp/differ" ]; then
    echo "modules aligned: $(wc -l <"$tmp/shared") packages shared between idepool and its tools, one version each"
    exit 0
  fi
  if [ "$fix" != --fix ]; then
    echo "modules not aligned: packages that idepool and its tools (tools/*) both build come from different versions of:" >&2
    while read -r m; do
      echo "  $m: $(awk -v m="$m" '$1 == m { printf "%s ", $2 }' "$tmp/versions")" >&2
    done <"$tmp/differ"
    echo "run: bash scripts/align-modules.sh --fix" >&2
    exit 1
  fi
  while read -r m; do
    echo "$m@$(awk -v m="$m" '$1 == m { print $2 }' "$tmp/versions" | sort -V | tail -1)"
  done <"$tmp/differ" >"$tmp/want"
  for n in "${names[@]}"; do
    mods=$(cut -d' ' -f2 "$tmp/$n" | sed 's/@.*/@/' | sort -u)
    want=$(grep -F -f <(echo "$mods") "$tmp/want" || true)
    if [ -n "$want" ]; then
      # shellcheck disable=SC2086
      (cd "$root/${dir[$n]}" && go get $want)
    fi
    (cd "$root/${dir[$n]}" && go mod tidy)
  done
done
echo "modules still not aligned after 5 rounds" >&2
exit 1
