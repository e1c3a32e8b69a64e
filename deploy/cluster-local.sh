#!/usr/bin/env bash
# cluster-local.sh: a Swarm of N Docker-in-Docker nodes on this machine, to
# try and test idepool on a real multi-node cluster (node loss, drain,
# partition, failover) without other machines and without a registry.
#
#   deploy/cluster-local.sh up [N] [--workers] [--no-images] [--stack]
#   deploy/cluster-local.sh stack | unstack
#   deploy/cluster-local.sh status
#   deploy/cluster-local.sh down
#
# up: builds the node image (deploy/cluster/build-node.sh, cached), creates
# the private bridge network $CLUSTER_NAME ($CLUSTER_SUBNET), starts N nodes
# (default 3) $CLUSTER_NAME-1..N, each with its /var/lib/docker on a volume
# of the same name, and joins them in one Swarm: node 1 runs `swarm init`,
# the others join as managers (or, with --workers, as workers of node 1).
# Then it loads the local images ($CLUSTER_IMAGES, by default those of
# idepool:dev, idepool-ide:test, idepool-s3:local and idepool-traefik:*
# that exist here) into every node with `docker save | docker load`.
# Re-running up is harmless: what exists is kept.
#
# It also makes, on every node, idepool-docker-cli:local (the node's own
# docker CLI as an image) for deploy/teardown.sh's job that removes the
# stack's volumes on every node.
#
# --stack then runs deploy/setup-local.sh inside node 1: idepool, Traefik
# and the local S3 store from deploy/stack.yml. Traefik runs on every
# manager (host-mode ports 80, and 8000 for the built-in router), so the API is
# at http://<any manager's address>/; start responses carry PUBLIC_URL,
# http://<node 1's address> (set PUBLIC_URL to choose another). The local S3
# store is pinned to node 1; with several managers idepool runs on another.
#
# stack deploys (or updates) the stack on a cluster that is up, as --stack
# does; unstack removes it with deploy/teardown.sh --volumes run on node 1
# (the stack, the IDE containers, the secrets, the volumes on every node).
#
# down: removes exactly what up made, found by the label
# idepool.cluster=$CLUSTER_NAME: containers, volumes, the network.
#
# Reach a node's engine with `docker exec $CLUSTER_NAME-1 docker ...`.
#
# Why the node flags: --privileged fails on some hosts ("unable to apply
# caps"); these capabilities plus the node's entrypoint (which remounts /sys
# and the cgroups read-write) are enough. Kernels without IPVS have no
# Swarm VIPs or ingress mesh: use --endpoint-mode dnsrr, host-mode ports and
# `docker service create --no-resolve-image` in the cluster.
#
# Environment: CLUSTER_NAME (ipcl), CLUSTER_SUBNET (10.213.7.0/24; node i
# gets .(10+i)), CLUSTER_HEARTBEAT (Swarm dispatcher heartbeat, 5s),
# CLUSTER_IMAGES (space separated), IDEPOOL_NODE_IMAGE (idepool-node),
# PUBLIC_URL (with --stack: http://<node 1's address>), IDEPOOL_IMAGE and
# IDEPOOL_IDE_IMAGE (--stack: the images setup-local.sh deploys).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
start=$SECONDS

name=${CLUSTER_NAME:-ipcl}
subnet=${CLUSTER_SUBNET:-10.213.7.0/24}
heartbeat=${CLUSTER_HEARTBEAT:-5s}
node_image=${IDEPOOL_NODE_IMAGE:-idepool-node}
label="idepool.cluster=$name"
prefix=${subnet%.*} # 10.213.7 for a /24

log() { printf '==> %s\n' "$*"; }
die() {
  printf 'cluster-local.sh: %s\n' "$*" >&2
  exit 1
}

node_ip() { printf '%s.%d' "$prefix" $((10 + $1)); }

# nodes prints the names of this cluster's node containers, in order.
nodes() { docker ps -a --filter "label=$label" --format '{{.Names}}' | sort -V; }

# wait_engine NODE: until the node's dockerd answers (60 s at most).
wait_engine() {
  local i
  for ((i = 0; i < 120; i++)); do
    docker exec "$1" docker info >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  docker logs --tail 20 "$1" >&2 || true
  die "the engine of $1 did not answer within 60 s"
}

default_images() {
  local img
  for img in idepool:dev idepool-ide:test idepool-s3:local; do
    docker image inspect "$img" >/dev/null 2>&1 && printf '%s ' "$img"
  done
  docker image ls --format '{{.Repository}}:{{.Tag}}' idepool-traefik | grep -v '<none>' | head -n1 || true
}

cmd_up() {
  local n=3 workers=0 images=1 stack=0 arg
  for arg in "$@"; do
    case "$arg" in
    --workers) workers=1 ;;
    --no-images) images=0 ;;
    --stack) stack=1 ;;
    '' | *[!0-9]*) die "unknown argument: $arg" ;;
    *) n=$arg ;;
    esac
  done
  [ "$n" -ge 1 ] && [ "$n" -le 200 ] || die "N must be 1..200"
  [ "${subnet##*/}" = 24 ] || die "CLUSTER_SUBNET must be a /24 (got $subnet)"

  local t=$SECONDS
  "$here/cluster/build-node.sh"
  log "node image ready in $((SECONDS - t)) s"

  if ! docker network inspect "$name" >/dev/null 2>&1; then
    docker network create --driver bridge --subnet "$subnet" --label "$label" "$name" >/dev/null
    log "created network $name ($subnet)"
  elif [ "$(docker network inspect -f "{{index .Labels \"idepool.cluster\"}}" "$name")" != "$name" ]; then
    die "a network named $name exists and is not this cluster's"
  fi

  t=$SECONDS
  local i node
  for ((i = 1; i <= n; i++)); do
    node="$name-$i"
    if docker container inspect "$node" >/dev/null 2>&1; then
      docker start "$node" >/dev/null
      continue
    fi
    docker volume create --label "$label" "$node" >/dev/null
    docker run -d --name "$node" --hostname "$node" --label "$label" \
      --network "$name" --ip "$(node_ip "$i")" \
      -v "$node:/var/lib/docker" \
      --cap-add ALL --cap-drop SYS_RESOURCE \
      --security-opt seccomp=unconfined --security-opt systempaths=unconfined \
      --device-cgroup-rule 'a *:* rwm' \
      --restart no \
      "$node_image:latest" >/dev/null
  done
  for ((i = 1; i <= n; i++)); do wait_engine "$name-$i"; done
  log "$n engines up in $((SECONDS - t)) s"

  t=$SECONDS
  local first="$name-1" state
  state=$(docker exec "$first" docker info --format '{{.Swarm.LocalNodeState}}')
  if [ "$state" != active ]; then
    docker exec "$first" docker swarm init --advertise-addr "$(node_ip 1)" \
      --dispatcher-heartbeat "$heartbeat" >/dev/null
  fi
  local mtoken wtoken token
  mtoken=$(docker exec "$first" docker swarm join-token -q manager)
  wtoken=$(docker exec "$first" docker swarm join-token -q worker)
  token=$mtoken
  [ "$workers" = 1 ] && token=$wtoken
  for ((i = 2; i <= n; i++)); do
    node="$name-$i"
    state=$(docker exec "$node" docker info --format '{{.Swarm.LocalNodeState}}')
    [ "$state" = active ] && continue
    docker exec "$node" docker swarm join --advertise-addr "$(node_ip "$i")" \
      --token "$token" "$(node_ip 1):2377" >/dev/null
  done
  log "swarm of $n formed in $((SECONDS - t)) s ($([ "$workers" = 1 ] && echo "1 manager, $((n - 1)) workers" || echo "$n managers"))"

  if [ "$images" = 1 ]; then
    local list
    list=${CLUSTER_IMAGES:-$(default_images)}
    if [ -n "${list// /}" ]; then
      t=$SECONDS
      local tar pids=()
      tar=$(mktemp "${TMPDIR:-/tmp}/cluster-images.XXXXXX.tar")
      # shellcheck disable=SC2086 # a list of image names
      docker save -o "$tar" $list
      for ((i = 1; i <= n; i++)); do
        docker exec -i "$name-$i" docker load -q <"$tar" >/dev/null &
        pids+=($!)
      done
      local failed=0 pid
      for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
      rm -f "$tar"
      [ "$failed" = 0 ] || die "loading images into the nodes failed"
      log "loaded $list into $n nodes in $((SECONDS - t)) s"
    fi
    t=$SECONDS
    pids=()
    for ((i = 1; i <= n; i++)); do
      docker_cli_image "$name-$i" &
      pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || die "making idepool-docker-cli:local on the nodes failed"; done
    log "idepool-docker-cli:local on $n nodes in $((SECONDS - t)) s"
  fi

  [ "$stack" = 0 ] || deploy_stack "$first"

  cmd_status
  log "up in $((SECONDS - start)) s; reach a node's engine with: docker exec $first docker node ls"
}

# docker_cli_image NODE: the node's own docker CLI (and the C library it
# links) as the image idepool-docker-cli:local, for teardown.sh's global service
# (no registry here to pull docker:cli from).
docker_cli_image() {
  docker exec "$1" docker image inspect idepool-docker-cli:local >/dev/null 2>&1 && return 0
  docker exec "$1" sh -c 'tar -C / -chf - usr/bin/docker lib64/ld-linux-x86-64.so.2 lib/x86_64-linux-gnu/libc.so.6 |
    docker import --change "ENTRYPOINT [\"/usr/bin/docker\"]" - idepool-docker-cli:local >/dev/null'
}

# deploy_stack NODE: deploy/setup-local.sh run on NODE's engine, from a copy
# of deploy/ (the images are loaded already: SKIP_BUILD).
deploy_stack() {
  local node=$1 t=$SECONDS
  copy_deploy "$node"
  docker exec -e SKIP_BUILD=1 -e PUBLIC_URL="${PUBLIC_URL:-http://$(node_ip 1)}" \
    -e IDEPOOL_IMAGE="${IDEPOOL_IMAGE:-idepool:dev}" -e IDEPOOL_IDE_IMAGE="${IDEPOOL_IDE_IMAGE:-idepool-ide:test}" -w /opt/idepool "$node" \
    bash deploy/setup-local.sh || die "setup-local.sh failed on $node"
  managers_route "$node"
  log "stack deployed in $((SECONDS - t)) s; the API: http://<any manager's address>/api/health, e.g. http://$(node_ip 1)/api/health; the built-in router on port 8000 (key: docker exec $node cat /root/.config/idepool/local/api-key)"
}

# managers_route NODE: waits until every manager's Traefik routes to idepool
# on ports 80 and 8000. setup-local.sh checked the node it ran on; the
# address printed is any manager's, and a Traefik whose task started last
# routes a moment later (seen: a node answering 404 right after the deploy).
managers_route() {
  local t=$SECONDS host port url
  command -v curl >/dev/null || die "curl is needed"
  for host in $(docker exec "$1" docker node ls --filter role=manager --format '{{.Hostname}}'); do
    for port in 80 8000; do
      url="http://$(node_ip "${host##*-}"):$port/api/health"
      until curl -fsS -m 2 -o /dev/null "$url" 2>/dev/null; do
        [ $((SECONDS - t)) -lt 60 ] || die "$host's Traefik does not route $url after 60 s"
        sleep 0.5
      done
    done
  done
  log "every manager's Traefik routes to idepool (at $((SECONDS - t)) s)"
}

# copy_deploy NODE: a fresh copy of deploy/ in NODE's /opt/idepool.
copy_deploy() {
  docker exec "$1" rm -rf /opt/idepool
  docker exec "$1" mkdir -p /opt/idepool
  docker cp "$here" "$1:/opt/idepool/deploy" >/dev/null
}

cmd_unstack() {
  local node="$name-1" t=$SECONDS
  docker container inspect "$node" >/dev/null 2>&1 || die "no cluster $name"
  copy_deploy "$node"
  docker exec -w /opt/idepool "$node" bash deploy/teardown.sh --volumes || die "teardown.sh failed on $node"
  log "stack removed in $((SECONDS - t)) s"
}

cmd_status() {
  local first
  first=$(nodes | head -n1)
  [ -n "$first" ] || {
    echo "no cluster $name"
    return 0
  }
  docker ps -a --filter "label=$label" --format 'table {{.Names}}\t{{.Status}}'
  docker exec "$first" docker node ls 2>/dev/null || echo "($first is no Swarm manager that answers)"
}

cmd_down() {
  local t=$SECONDS ids
  ids=$(docker ps -aq --filter "label=$label")
  # shellcheck disable=SC2086 # a list of ids
  [ -z "$ids" ] || docker rm -f -v $ids >/dev/null
  ids=$(docker volume ls -q --filter "label=$label")
  # shellcheck disable=SC2086
  [ -z "$ids" ] || docker volume rm $ids >/dev/null
  ids=$(docker network ls -q --filter "label=$label")
  # shellcheck disable=SC2086
  [ -z "$ids" ] || docker network rm $ids >/dev/null
  log "cluster $name removed in $((SECONDS - t)) s"
}

case "${1:-}" in
up)
  shift
  cmd_up "$@"
  ;;
down) cmd_down ;;
stack)
  docker container inspect "$name-1" >/dev/null 2>&1 || die "no cluster $name"
  deploy_stack "$name-1"
  ;;
unstack) cmd_unstack ;;
status) cmd_status ;;
*)
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
  ;;
esac
