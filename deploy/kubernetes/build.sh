#!/usr/bin/env bash
# Builds what the single-node test cluster of deploy/kubernetes/cluster.sh
# needs, from the Go module proxy and Debian's archive (no registry here),
# cached by version under ~/.cache/idepool so that later runs are instant:
#
#   kube-<version>          one multi-call binary (tools/kubernetes): kube-apiserver,
#                           kube-controller-manager, kube-scheduler, kubelet,
#                           kube-proxy, kubectl and etcd. ~6 min cold on 2 cores
#                           alone, ~4 min after idepool's own build (they share
#                           client-go and more: scripts/align-modules.sh); ~3 GB
#                           build cache.
#   pause-<version>         the pod sandbox's process (tools/kubernetes/pause)
#   helm-<version>          Helm (tools/helm), for the chart's tests; ~10 s
#                           after the above (it shares nearly all it compiles)
#   cni-<debian version>/   CNI plugins from Debian's containernetworking-plugins,
#                           unpacked with apt-get download + dpkg-deb -x (not installed)
#
# containerd (Debian's, run as a private instance by cluster.sh) and runc
# come from the host's packages.
#
#   deploy/kubernetes/build.sh          # prints the cache directory when done
set -euo pipefail
cd "$(dirname "$0")/../.."

version=v1.35.4 # k8s.io/kubernetes in tools/kubernetes/go.mod
cache="${IDEPOOL_CACHE:-$HOME/.cache/idepool}"
kube="$cache/kube-$version"
pause="$cache/pause-$version"
helm_version=v3.20.2 # helm.sh/helm/v3 in tools/helm/go.mod
helm="$cache/helm-$helm_version"
mkdir -p "$cache"

if [ ! -x "$kube" ]; then
  echo "building kubernetes $version into $kube (~6 min, once)" >&2
  tmp="$kube.tmp.$$"
  trap 'rm -f "$tmp"' EXIT
  # Without these every component reports v0.0.0-master, and the kubelet's
  # and kubectl's version skew checks against the apiserver misfire.
  major=${version#v}
  minor=${major#*.}
  minor=${minor%%.*}
  major=${major%%.*}
  ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ld="$ld -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  # The compiler's own garbage-collector tuning (no GOGC here: a GOGC in
  # the environment turns off the compiler's larger starting heap and costs
  # a new machine minutes of CPU; memory is not what is short here).
  (cd tools/kubernetes && CGO_ENABLED=0 go build -p "${GOMAXPROCS:-2}" -trimpath \
    -ldflags "$ld" -o "$tmp" .)
  mv "$tmp" "$kube"
  trap - EXIT
fi

if [ ! -x "$pause" ]; then
  (cd tools/kubernetes && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$pause.tmp.$$" ./pause)
  mv "$pause.tmp.$$" "$pause"
fi

# CNI plugins: Debian's package, unpacked (not installed: nothing of the
# host's configuration changes). The firewall plugin matters: Docker's
# FORWARD policy DROP would otherwise drop pod traffic.
cni_dir=$(ls -d "$cache"/cni-* 2>/dev/null | head -n1 || true)
if [ -z "$cni_dir" ] || [ ! -x "$cni_dir/bridge" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && apt-get download containernetworking-plugins >/dev/null)
  deb=$(ls "$work"/containernetworking-plugins_*.deb)
  debver=$(dpkg-deb -f "$deb" Version)
  cni_dir="$cache/cni-$debver"
  dpkg-deb -x "$deb" "$work/root"
  mkdir -p "$cni_dir.tmp"
  cp "$work"/root/usr/lib/cni/* "$cni_dir.tmp/"
  rm -rf "$cni_dir"
  mv "$cni_dir.tmp" "$cni_dir"
  rm -rf "$work"
  trap - EXIT
fi

# Helm last: the cluster does not need it (cluster.sh asks with
# K8S_BUILD_HELM=0), the chart's tests do.
if [ "${K8S_BUILD_HELM:-1}" = 1 ] && [ ! -x "$helm" ]; then
  echo "building helm $helm_version into $helm" >&2
  (cd tools/helm && CGO_ENABLED=0 go build -p "${GOMAXPROCS:-2}" -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version" \
    -o "$helm.tmp.$$" helm.sh/helm/v3/cmd/helm)
  mv "$helm.tmp.$$" "$helm"
fi

echo "$cache"
