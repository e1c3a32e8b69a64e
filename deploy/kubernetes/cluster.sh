#!/usr/bin/env bash
# A single-node Kubernetes on this machine, for idepool's tests: etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy and a
# kubelet (the multi-call binary of deploy/kubernetes/build.sh), with a
# PRIVATE containerd (own config, socket, root and state: never Docker's),
# runc from the host and Debian's CNI plugins on a bridge of its own.
#
#   deploy/kubernetes/cluster.sh up        # idempotent: a healthy cluster is reused (~6 s cold)
#   deploy/kubernetes/cluster.sh down      # stops everything, deletes its pods and files
#   deploy/kubernetes/cluster.sh env       # prints KUBECONFIG=... and the facts tests need
#   deploy/kubernetes/cluster.sh import IMAGE...   # docker save | ctr import into the cluster
#   deploy/kubernetes/cluster.sh status
#
# Environment (defaults in brackets):
#   K8S_STATE     where everything lives [/var/lib/idepool-k8s]
#   K8S_NODE_IP   the node's address: the kubelet cannot use loopback [the default route's source]
#   K8S_POD_CIDR  [100.96.0.0/24]   K8S_SERVICE_CIDR [100.64.0.0/16]: chosen to collide with
#                 nothing (Docker takes 172.16/12, Swarm's overlays 10/8)
#   K8S_API_PORT  [6443]
#
# Must run as root (the kubelet and containerd do). Linux with cgroup v1 or v2.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)

state="${K8S_STATE:-/var/lib/idepool-k8s}"
run="/run/idepool-k8s"
node="idepool-k8s"
pod_cidr="${K8S_POD_CIDR:-100.96.0.0/24}"
svc_cidr="${K8S_SERVICE_CIDR:-100.64.0.0/16}"
api_port="${K8S_API_PORT:-6443}"
etcd_port=12379 # not 2379: leave the usual ports to anyone else's etcd
bridge=idpk8s0
kube_version=v1.35.4

log() { printf '==> %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

node_ip() {
  if [ -n "${K8S_NODE_IP:-}" ]; then
    echo "$K8S_NODE_IP"
    return
  fi
  ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -n1
}

# svc_ip N prints the Nth address of the service range (1: the apiserver's).
svc_ip() {
  local base=${svc_cidr%/*}
  echo "${base%.*}.$1"
}

kubectl_() { "$bin/kubectl" --kubeconfig "$state/admin.kubeconfig" "$@"; }

need_build() {
  local cache
  cache=$(K8S_BUILD_HELM=0 "$repo/deploy/kubernetes/build.sh" | tail -n1)
  bin="$state/bin"
  mkdir -p "$bin"
  # Symlinks named as the components: the multi-call binary dispatches on
  # its name, and ps shows which component a process is.
  for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl etcd; do
    ln -sfn "$cache/kube-$kube_version" "$bin/$c"
  done
  ln -sfn "$cache/pause-$kube_version" "$bin/pause"
  cni_bin=$(ls -d "$cache"/cni-* | head -n1)
}

# ---- certificates -----------------------------------------------------------

# pki makes a CA, the apiserver's serving certificate, one client
# certificate (system:masters) used by every component, and the service
# account signing key. EC P-256: quick to make. Kept across up/down.
pki() {
  local d="$state/pki" ip
  ip=$(node_ip)
  if [ -f "$d/apiserver.crt" ] && [ "$(cat "$d/node-ip" 2>/dev/null)" = "$ip" ]; then
    return
  fi
  log "making certificates in $d"
  rm -rf "$d"
  mkdir -p "$d"
  (
    cd "$d"
    umask 077
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt \
      -days 3650 -subj "/CN=idepool-k8s-ca" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout apiserver.key -out apiserver.csr \
      -subj "/CN=kube-apiserver" 2>/dev/null
    printf 'subjectAltName=DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:%s,IP:%s\nextendedKeyUsage=serverAuth\n' \
      "$ip" "$(svc_ip 1)" >apiserver.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile apiserver.ext -out apiserver.crt 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout admin.key -out admin.csr \
      -subj "/O=system:masters/CN=idepool-k8s-admin" 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile client.ext -out admin.crt 2>/dev/null
    openssl ecparam -name prime256v1 -genkey -noout -out sa.key 2>/dev/null
    openssl ec -in sa.key -pubout -out sa.pub 2>/dev/null
    rm -f ./*.csr ./*.ext
    echo "$ip" >node-ip
  )
  # The kubeconfig every component (and the tests) use.
  cat >"$state/admin.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: idepool-k8s
  cluster:
    server: https://$ip:$api_port
    certificate-authority-data: $(base64 -w0 <"$d/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(base64 -w0 <"$d/admin.crt")
    client-key-data: $(base64 -w0 <"$d/admin.key")
contexts:
- name: idepool-k8s
  context: {cluster: idepool-k8s, user: admin}
current-context: idepool-k8s
EOF
  chmod 600 "$state/admin.kubeconfig"
}

# ---- processes --------------------------------------------------------------

# start NAME CMD...: runs CMD in the background with its log and pid file,
# unless the pid file names a live process.
start() {
  local name=$1
  shift
  if alive "$name"; then
    return
  fi
  # setsid: a Ctrl-C of the caller's shell does not reach the cluster.
  setsid "$@" >>"$state/log/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$state/pid/$name"
}

alive() {
  local pid
  pid=$(cat "$state/pid/$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# stop NAME: SIGTERM, then SIGKILL after 10 s, the process of its pid file.
stop() {
  local name=$1 pid i
  pid=$(cat "$state/pid/$name" 2>/dev/null) || return 0
  rm -f "$state/pid/$name"
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  for i in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
}

# wait_for WHAT SECONDS CMD...: polls CMD every 100 ms.
wait_for() {
  local what=$1 secs=$2 i
  shift 2
  for i in $(seq $((secs * 10))); do
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  die "$what not ready within ${secs}s (logs in $state/log)"
}

healthy() {
  alive etcd && alive containerd && alive kube-apiserver && alive kube-controller-manager &&
    alive kube-scheduler && alive kubelet && alive kube-proxy &&
    kubectl_ get --raw /readyz >/dev/null 2>&1 &&
    [ "$(kubectl_ get node "$node" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

# ---- configuration files ------------------------------------------------------

write_configs() {
  local ip=$1
  mkdir -p "$state/cni/net.d" "$state/cni/ipam" "$state/cni/cache" "$run"
  # containerd 1.x config (version 2): everything private. The host root
  # lacks CAP_SYS_RESOURCE, so the CRI must not lower oom_score_adj below
  # its own (restrict_oom_score_adj). runc's state under our run dir, not
  # /run/containerd/runc. The pause image is ours (nothing can be pulled).
  cat >"$state/containerd.toml" <<EOF
version = 2
root = "$state/containerd"
state = "$run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.grpc.v1.introspection.tracing"]
[grpc]
  address = "$run/containerd.sock"
[ttrpc]
  address = "$run/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$state/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "idepool.local/pause:$kube_version"
  restrict_oom_score_adj = true
  enable_selinux = false
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "$run/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$cni_bin"
    conf_dir = "$state/cni/net.d"
    max_conf_num = 1
EOF
  # One bridge, host-local addresses, and nothing else: the pods' iptables
  # rules (admitted past Docker's FORWARD policy of DROP, masqueraded out)
  # are static ones for the whole pod range (pod_rules). The bridge's ipMasq
  # and the firewall and portmap plugins would each run iptables for every
  # pod's start and stop, under one lock: a class's pods started and
  # stopped one after the other.
  cat >"$state/cni/net.d/10-idepool-k8s.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "idepool-k8s",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$pod_cidr"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$state/cni/ipam"
      }
    }
  ]
}
EOF
  cat >"$state/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $ip
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $state/pki/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$run/containerd.sock
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
serializeImagePulls: false
# Images are imported, never pulled: garbage-collecting one would break
# every later pod using it.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# A shared CI disk: do not evict pods or taint the node for disk pressure.
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
maxPods: 200
syncFrequency: 10s
nodeStatusUpdateFrequency: 5s
EOF
  cat >"$state/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $state/admin.kubeconfig}
hostnameOverride: $node
clusterCIDR: $pod_cidr
mode: iptables
bindAddress: $ip
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
# The conntrack sysctls are not writable here: leave them alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
}

# reject_unprogrammed: a service address kube-proxy has not programmed yet
# (a new Service, or one whose pods are all being replaced) would be routed
# out of the host to whatever answers there (on some networks a web server
# that says 404, and an HTTP client keeps that connection and its 404s):
# refuse it instead, as on a cluster whose service range is not routable,
# so that clients retry. Programmed addresses are translated to pod
# addresses before routing and the filter table, so only the unprogrammed
# match. From pods: a policy route for packets that come in on the bridge
# (the filter table's FORWARD would be too late: pod_rules
# puts its ACCEPT of pod traffic first), of type prohibit: its ICMP answer
# fails a TCP connect at once (host unreachable would be retried for
# minutes). From the host: filter OUTPUT.
route_table=4719
reject_unprogrammed() {
  ip route replace prohibit "$svc_cidr" table "$route_table"
  ip rule show | grep "lookup $route_table" >/dev/null ||
    ip rule add iif "$bridge" to "$svc_cidr" lookup "$route_table" priority "$route_table"
  iptables -N IDEPOOL-K8S 2>/dev/null || true
  iptables -C OUTPUT -j IDEPOOL-K8S 2>/dev/null || iptables -I OUTPUT -j IDEPOOL-K8S
  iptables -F IDEPOOL-K8S
  iptables -A IDEPOOL-K8S -d "$svc_cidr" -j REJECT --reject-with icmp-port-unreachable
}

# pod_rules: what the bridge's ipMasq and the CNI firewall plugin did per
# pod, once for the pod range: its traffic out is admitted past Docker's
# FORWARD policy (DROP) and masqueraded; traffic to it only when it belongs
# to a connection a pod or the host opened (as the firewall plugin's).
pod_rules() {
  iptables -N IDEPOOL-K8S-FWD 2>/dev/null || true
  iptables -F IDEPOOL-K8S-FWD
  iptables -A IDEPOOL-K8S-FWD -s "$pod_cidr" -j ACCEPT
  iptables -A IDEPOOL-K8S-FWD -d "$pod_cidr" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
  iptables -C FORWARD -j IDEPOOL-K8S-FWD 2>/dev/null || iptables -I FORWARD -j IDEPOOL-K8S-FWD
  iptables -t nat -N IDEPOOL-K8S-NAT 2>/dev/null || true
  iptables -t nat -F IDEPOOL-K8S-NAT
  iptables -t nat -A IDEPOOL-K8S-NAT -s "$pod_cidr" -d "$pod_cidr" -j RETURN
  iptables -t nat -A IDEPOOL-K8S-NAT -s "$pod_cidr" -d 224.0.0.0/4 -j RETURN
  iptables -t nat -A IDEPOOL-K8S-NAT -s "$pod_cidr" -j MASQUERADE
  iptables -t nat -C POSTROUTING -j IDEPOOL-K8S-NAT 2>/dev/null || iptables -t nat -I POSTROUTING -j IDEPOOL-K8S-NAT
}

# sweep_pod_nat removes the per-pod masquerade rules and chains an older
# configuration's bridge plugin (ipMasq) made: a pod whose CNI DEL never ran
# (force-deleted as its kubelet stopped) left them behind. Each by its own
# spec, not its line number: Docker edits POSTROUTING meanwhile.
sweep_pod_nat() {
  local line chain
  # The jumps to the per-pod chains, then the chains (every rule in them
  # carries the same comment).
  iptables -t nat -S POSTROUTING 2>/dev/null | grep -F 'name: \"idepool-k8s\"' | while IFS= read -r line; do
    eval "iptables -t nat ${line/#-A /-D }" 2>/dev/null || true
  done || true # grep finds nothing: the usual case
  iptables -t nat -S 2>/dev/null | grep -F 'name: \"idepool-k8s\"' | awk '$1 == "-A" && $2 ~ /^CNI-/ {print $2}' | sort -u |
    while IFS= read -r chain; do
      iptables -t nat -F "$chain" 2>/dev/null && iptables -t nat -X "$chain" 2>/dev/null || true
    done || true
}

# ---- up / down ----------------------------------------------------------------

up() {
  [ "$(id -u)" = 0 ] || die "must run as root (the kubelet and containerd do)"
  need_build
  mkdir -p "$state/log" "$state/pid"
  if healthy; then
    pod_rules
    reject_unprogrammed
    log "cluster up (reused)"
    return
  fi
  local ip t0
  t0=$(date +%s.%N)
  ip=$(node_ip)
  [ -n "$ip" ] || die "no node IP (set K8S_NODE_IP)"
  pki
  write_configs "$ip"
  local pki="$state/pki" kc="$state/admin.kubeconfig"

  start etcd "$bin/etcd" --name idepool-k8s --data-dir "$state/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$((etcd_port + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
    --initial-cluster "idepool-k8s=http://127.0.0.1:$((etcd_port + 1))" \
    --unsafe-no-fsync --snapshot-count 10000 --log-level warn
  start containerd containerd --config "$state/containerd.toml" --log-level warn

  start kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 0.0.0.0 --secure-port "$api_port" --advertise-address "$ip" \
    --service-cluster-ip-range "$svc_cidr" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --kubelet-client-certificate "$pki/admin.crt" --kubelet-client-key "$pki/admin.key" \
    --kubelet-preferred-address-types InternalIP \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc \
    --authorization-mode Node,RBAC --allow-privileged \
    --enable-priority-and-fairness=false --profiling=false \
    --cert-dir "$state/apiserver-certs" --event-ttl 1h
  start kube-controller-manager "$bin/kube-controller-manager" --kubeconfig "$kc" \
    --authentication-kubeconfig "$kc" --authorization-kubeconfig "$kc" \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
    --leader-elect=false --bind-address 127.0.0.1 --use-service-account-credentials=false \
    --controllers '*,-bootstrapsigner,-tokencleaner' --profiling=false
  start kube-scheduler "$bin/kube-scheduler" --kubeconfig "$kc" \
    --authentication-kubeconfig "$kc" --authorization-kubeconfig "$kc" \
    --leader-elect=false --bind-address 127.0.0.1 --profiling=false

  wait_for containerd 30 ctr --address "$run/containerd.sock" version
  import_pause
  wait_for kube-apiserver 60 kubectl_ get --raw /readyz
  start kubelet "$bin/kubelet" --config "$state/kubelet.yaml" --kubeconfig "$kc" \
    --hostname-override "$node" --node-ip "$ip" --root-dir "$state/kubelet" \
    --cert-dir "$state/kubelet-pki"
  start kube-proxy "$bin/kube-proxy" --config "$state/kube-proxy.yaml"
  pod_rules
  reject_unprogrammed
  wait_for "node $node" 90 sh -c "[ \"\$('$bin/kubectl' --kubeconfig '$kc' get node $node -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}')\" = True ]"
  # The default service account is made by the controller manager shortly
  # after the apiserver is up; pods are refused until it exists.
  wait_for "default service account" 30 kubectl_ -n default get serviceaccount default
  log "cluster up in $(echo "$(date +%s.%N) - $t0" | bc 2>/dev/null || echo '?')s: KUBECONFIG=$kc"
}

import_pause() {
  local ref="idepool.local/pause:$kube_version"
  if ctr --address "$run/containerd.sock" -n k8s.io images ls -q | grep -x "$ref" >/dev/null; then
    return
  fi
  # An OCI archive made by hand: one layer holding /pause. No Docker needed.
  local w
  w=$(mktemp -d)
  mkdir -p "$w/root" "$w/oci/blobs/sha256"
  cp "$bin/pause" "$w/root/pause"
  tar -C "$w/root" --owner 0 --group 0 --numeric-owner --mtime @0 -cf "$w/layer.tar" pause
  local layer lsize cfg csize man msize
  layer=$(sha256sum "$w/layer.tar" | cut -d' ' -f1)
  lsize=$(stat -c %s "$w/layer.tar")
  mv "$w/layer.tar" "$w/oci/blobs/sha256/$layer"
  printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/pause"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$layer" >"$w/cfg"
  cfg=$(sha256sum "$w/cfg" | cut -d' ' -f1)
  csize=$(stat -c %s "$w/cfg")
  mv "$w/cfg" "$w/oci/blobs/sha256/$cfg"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
    "$cfg" "$csize" "$layer" "$lsize" >"$w/man"
  man=$(sha256sum "$w/man" | cut -d' ' -f1)
  msize=$(stat -c %s "$w/man")
  mv "$w/man" "$w/oci/blobs/sha256/$man"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$w/oci/oci-layout"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' \
    "$man" "$msize" "$ref" >"$w/oci/index.json"
  tar -C "$w/oci" -cf "$w/pause.tar" .
  ctr --address "$run/containerd.sock" -n k8s.io images import "$w/pause.tar" >/dev/null
  rm -rf "$w"
}

# import IMAGE...: Docker's images into the cluster's containerd (only when
# the digest changed), as docker.io/library/NAME:TAG, which is what a pod's
# "NAME:TAG" means.
import_images() {
  local img id have
  for img in "$@"; do
    id=$(docker image inspect --format '{{.Id}}' "$img") || die "no docker image $img"
    have=$(cat "$state/images/$(echo "$img" | tr '/:' '__')" 2>/dev/null || true)
    if [ "$have" = "$id" ] && ctr --address "$run/containerd.sock" -n k8s.io images ls -q | grep "$img\$" >/dev/null; then
      continue
    fi
    log "importing $img"
    docker save "$img" | ctr --address "$run/containerd.sock" -n k8s.io images import - >/dev/null
    mkdir -p "$state/images"
    echo "$id" >"$state/images/$(echo "$img" | tr '/:' '__')"
  done
}

down() {
  bin="$state/bin"
  if [ ! -d "$state/pid" ]; then
    log "no cluster in $state"
    return
  fi
  # Pods first, through the kubelet, so that the CRI tears their network
  # down (CNI DEL) and stops their shims.
  if alive kube-apiserver && alive kubelet; then
    kubectl_ delete pods --all --all-namespaces --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
    for _ in $(seq 150); do
      [ -z "$(ctr --address "$run/containerd.sock" -n k8s.io tasks ls -q 2>/dev/null | head -n1)" ] && break
      sleep 0.2
    done
  fi
  stop kube-proxy
  stop kubelet
  stop kube-scheduler
  stop kube-controller-manager
  stop kube-apiserver
  stop etcd
  # Anything the kubelet had not stopped: kill its tasks through containerd.
  if alive containerd; then
    local t
    for t in $(ctr --address "$run/containerd.sock" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr --address "$run/containerd.sock" -n k8s.io tasks kill -s KILL "$t" >/dev/null 2>&1 || true
      ctr --address "$run/containerd.sock" -n k8s.io tasks delete -f "$t" >/dev/null 2>&1 || true
    done
  fi
  stop containerd
  # Shims whose containerd is gone keep running: only ours (they name our
  # socket), each by its pid.
  local p
  for p in $(grep -l -a -- "$run/containerd.sock" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3); do
    kill -9 "$p" 2>/dev/null || true
  done
  # What the kubelet and the CNI plugins leave whatever their config says.
  for m in $(awk -v s="$state" -v r="$run" 'index($2, s) == 1 || index($2, r) == 1 {print $2}' /proc/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  ip link del "$bridge" 2>/dev/null || true
  # kube-proxy's rules (it leaves them when it stops), the kubelet's canary
  # chains, and the firewall plugin's chains (no other CNI user here).
  "$bin/kube-proxy" --cleanup >/dev/null 2>&1 || true
  local t
  for t in filter nat mangle; do
    iptables -t "$t" -F KUBE-KUBELET-CANARY 2>/dev/null && iptables -t "$t" -X KUBE-KUBELET-CANARY 2>/dev/null || true
  done
  iptables -D INPUT -j KUBE-FIREWALL 2>/dev/null || true
  iptables -D OUTPUT -j KUBE-FIREWALL 2>/dev/null || true
  iptables -F KUBE-FIREWALL 2>/dev/null && iptables -X KUBE-FIREWALL 2>/dev/null || true
  iptables -t mangle -X KUBE-IPTABLES-HINT 2>/dev/null || true
  while iptables -D FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD 2>/dev/null; do :; done
  for t in CNI-FORWARD CNI-ADMIN; do
    iptables -F "$t" 2>/dev/null && iptables -X "$t" 2>/dev/null || true
  done
  rm -rf /var/lib/cni/results/idepool-k8s-* 2>/dev/null || true
  rmdir /var/lib/cni/results /var/lib/cni 2>/dev/null || true
  iptables -D FORWARD -j IDEPOOL-K8S 2>/dev/null || true
  sweep_pod_nat
  while iptables -D FORWARD -j IDEPOOL-K8S-FWD 2>/dev/null; do :; done
  iptables -F IDEPOOL-K8S-FWD 2>/dev/null && iptables -X IDEPOOL-K8S-FWD 2>/dev/null || true
  while iptables -t nat -D POSTROUTING -j IDEPOOL-K8S-NAT 2>/dev/null; do :; done
  iptables -t nat -F IDEPOOL-K8S-NAT 2>/dev/null && iptables -t nat -X IDEPOOL-K8S-NAT 2>/dev/null || true
  iptables -D OUTPUT -j IDEPOOL-K8S 2>/dev/null || true
  while ip rule del lookup "$route_table" 2>/dev/null; do :; done
  ip route flush table "$route_table" 2>/dev/null || true
  iptables -F IDEPOOL-K8S 2>/dev/null || true
  iptables -X IDEPOOL-K8S 2>/dev/null || true
  rm -rf "$run" "$state/kubelet" "$state/containerd-state" "$state/cni/ipam" /var/lib/kubelet/device-plugins \
    /var/log/pods /var/log/containers /run/containerd/runc/k8s.io 2>/dev/null || true
  rmdir /var/lib/kubelet /run/containerd/runc /run/containerd 2>/dev/null || true
  if [ "${K8S_KEEP_DATA:-}" != 1 ]; then
    rm -rf "$state/etcd" "$state/containerd" "$state/images"
  fi
  log "cluster down"
}

cmd=${1:-}
# One at a time: test packages running in parallel may all ask for "up".
mkdir -p "$(dirname "$state")"
exec 9>"$state.lock"
flock 9
case "$cmd" in
up) up ;;
down) down ;;
env)
  echo "KUBECONFIG=$state/admin.kubeconfig"
  echo "K8S_NODE_IP=$(node_ip)"
  echo "K8S_NODE=$node"
  echo "K8S_POD_CIDR=$pod_cidr"
  echo "K8S_CONTAINERD=$run/containerd.sock"
  echo "K8S_CACHE=${IDEPOOL_CACHE:-$HOME/.cache/idepool}"
  ;;
import)
  shift
  bin="$state/bin"
  import_images "$@"
  ;;
status)
  bin="$state/bin"
  if healthy; then echo up; else
    echo down
    exit 1
  fi
  ;;
*) die "usage: $0 {up|down|env|import IMAGE...|status}" ;;
esac
