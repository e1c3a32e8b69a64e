#!/usr/bin/env bash
# teardown.sh: removes an idepool deployment from this Swarm, and only what
# is ours:
#   - the stack "idepool" (idepool, Traefik, the local S3 store);
#   - the IDE containers: services labelled idepool.managed=<deployment>;
#   - the overlay network "idepool" once nothing uses it;
#   - this stack's secrets (idepool-env-*, idepool-api-key-*,
#     idepool-router-secret: a new deployment signs new route cookies).
# It keeps the images unless --images, and the volumes (Traefik's
# certificates, the local workspaces' store) unless --volumes: on EVERY
# node of the Swarm, each node's own volumes removed by a global service (one
# task per node) of TEARDOWN_IMAGE, an image with the docker CLI as its
# entrypoint (docker:cli; deploy/cluster-local.sh makes
# idepool-docker-cli:local on its nodes). A node that is down keeps its
# volumes and is named.
# Never `docker system prune`: other things on this engine are not ours.
#
#   deploy/teardown.sh [--images] [--volumes]
#
# Environment: STACK, NETWORK, DEPLOYMENT (all "idepool"); TEARDOWN_TIMEOUT
# (seconds to wait for containers to stop, 120); TEARDOWN_IMAGE (docker:cli,
# else idepool-docker-cli:local when this node has it).
#
# The IDE containers are stopped without a final flush of their workspaces:
# to save work first, stop them through the API (DELETE /api/containers/<id>)
# or let idle shutdown do it.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=deploy/lib.sh
. deploy/lib.sh

images=""
volumes=""
for arg in "$@"; do
  case "$arg" in
  --images) images=1 ;;
  --volumes) volumes=1 ;;
  -h | --help)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *) die "unknown argument $arg (want --images, --volumes)" ;;
  esac
done
TEARDOWN_TIMEOUT="${TEARDOWN_TIMEOUT:-120}"

# volumes_on_every_node: a Docker volume lives on one node, and a manager's
# engine removes only its own; a global service (not a global-job: Docker
# 20.10 leaves a removed job's containers behind) runs one task per node that
# removes that node's volumes of the stack through the node's socket (-f:
# a volume that is not there is no error; one still in use, by a container
# of the stack that is still stopping there, fails the task: retried).
volumes_on_every_node() {
  local image=${TEARDOWN_IMAGE:-} job="$STACK-teardown-volumes" names=() v
  if [ -z "$image" ]; then
    image=docker:cli
    docker image inspect idepool-docker-cli:local >/dev/null 2>&1 && image=idepool-docker-cli:local
  fi
  for v in $STACK_VOLUMES; do names+=("${STACK}_$v"); done
  docker service rm "$job" >/dev/null 2>&1 || true
  local resolve=(--no-resolve-image)
  case "$image" in */* | docker:*) resolve=() ;; esac
  if ! docker service create -d --name "$job" --mode global "${resolve[@]}" \
    --label "idepool.managed=$DEPLOYMENT" \
    --restart-condition on-failure --restart-delay 2s --restart-max-attempts 15 \
    --mount type=bind,src=/var/run/docker.sock,dst=/var/run/docker.sock \
    "$image" volume rm -f "${names[@]}" >/dev/null; then
    warn "could not start the job that removes the volumes on the other nodes (image $image; set TEARDOWN_IMAGE)"
    return 0
  fi
  # Done when every Ready node has a completed task (failed attempts stay
  # in the task history, so count nodes, not tasks).
  job_done() {
    local ready done
    ready=$(docker node ls --format '{{.Status}}' | grep -c '^Ready$')
    done=$(docker service ps "$job" --format '{{.Node}} {{.CurrentState}}' 2>/dev/null | awk '$2 == "Complete" { print $1 }' | sort -u | wc -l)
    [ "$done" -ge "$ready" ]
  }
  if wait_for "$TEARDOWN_TIMEOUT" "removed the stack's volumes on every node" job_done; then :; else
    warn "the volumes of these nodes may remain (node down, or image $image missing there):"
    docker service ps --no-trunc --format '{{.Node}} {{.CurrentState}} {{.Error}}' "$job" | grep -v ' Complete' >&2 || true
  fi
  docker service rm "$job" >/dev/null 2>&1 || true
  # Each node removes its exited task containers by itself, soon after.
  job_gone() { [ -z "$(docker ps -aq --filter "label=com.docker.swarm.service.name=$job")" ]; }
  wait_for 30 "the job's containers are gone" job_gone || true
}

need_docker
if [ "$(swarm_state)" != active ]; then
  log "Swarm mode is not active: no stack or services to remove"
else
  # 1. The stack first, so idepool stops refilling its pool.
  if docker stack ls --format '{{.Name}}' | grep -x "$STACK" >/dev/null; then
    # It cannot remove the network while IDE containers use it (they are
    # not part of the stack): that error is expected, step 3 retries.
    docker stack rm "$STACK" >/dev/null 2>&1 || true
    log "removing the stack $STACK"
  else
    log "no stack $STACK"
  fi
  stack_gone() { [ -z "$(docker ps -q --filter "label=com.docker.stack.namespace=$STACK")" ]; }
  wait_for "$TEARDOWN_TIMEOUT" "the stack's containers are gone" stack_gone ||
    warn "containers of the stack $STACK still running after ${TEARDOWN_TIMEOUT}s"

  # 2. The IDE containers of this deployment, by label (their names are
  # idepool-<id>, but the label is what marks them as ours).
  svcs=$(docker service ls -q --filter "label=idepool.managed=$DEPLOYMENT")
  if [ -n "$svcs" ]; then
    # shellcheck disable=SC2086 # one id per word
    docker service rm $svcs >/dev/null
    log "removed $(echo "$svcs" | wc -l) container service(s) labelled idepool.managed=$DEPLOYMENT"
  fi
  ctrs_gone() { [ -z "$(docker ps -aq --filter "label=idepool.managed=$DEPLOYMENT")" ]; }
  if ! wait_for "$TEARDOWN_TIMEOUT" "their containers are gone" ctrs_gone; then
    warn "containers labelled idepool.managed=$DEPLOYMENT remain after ${TEARDOWN_TIMEOUT}s:"
    docker ps -a --filter "label=idepool.managed=$DEPLOYMENT" >&2
  fi

  # 3. The network, if it is ours and unused (stack rm removes it when the
  # stack created it; setup-local.sh labels the one it creates the same way).
  if docker network inspect "$NETWORK" >/dev/null 2>&1; then
    ns=$(docker network inspect -f '{{index .Labels "com.docker.stack.namespace"}}' "$NETWORK")
    managed=$(docker network inspect -f '{{index .Labels "idepool.managed"}}' "$NETWORK")
    if [ "$ns" = "$STACK" ] || [ "$managed" = "$DEPLOYMENT" ]; then
      net_gone() { docker network rm "$NETWORK" >/dev/null 2>&1 || ! docker network inspect "$NETWORK" >/dev/null 2>&1; }
      if wait_for 60 "removed the network $NETWORK" net_gone; then :; else
        warn "network $NETWORK is still in use; left in place"
      fi
    else
      log "network $NETWORK is not ours (no idepool label): left in place"
    fi
  fi

  # 4. Our secrets (none is in use any more).
  for s in $(docker secret ls --filter "label=idepool.managed=$DEPLOYMENT" --format '{{.Name}}'); do
    case "$s" in "$STACK"-env-* | "$STACK"-api-key-* | "$STACK"-router-secret)
      docker secret rm "$s" >/dev/null 2>&1 && log "removed secret $s" ;;
    esac
  done
fi

# 5. Volumes, on request: the stack's (named <stack>_<volume>), on this node
# and then on every other node of the Swarm.
if [ -n "$volumes" ]; then
  for v in $(docker volume ls -q --filter "label=com.docker.stack.namespace=$STACK"); do
    vol_gone() { docker volume rm "$v" >/dev/null 2>&1; }
    if wait_for 30 "removed volume $v" vol_gone; then :; else warn "volume $v is in use; left in place"; fi
  done
  if [ "$(swarm_state)" = active ] && is_manager; then
    [ "$(docker node ls -q | wc -l)" -gt 1 ] && volumes_on_every_node
    # The local S3 store's data is gone: its node label goes too.
    for n in $(docker node ls -q); do
      if [ -n "$(docker node inspect -f '{{index .Spec.Labels "idepool.s3-store"}}' "$n")" ]; then
        docker node update --label-rm idepool.s3-store "$n" >/dev/null && log "removed the label idepool.s3-store of node $n"
      fi
    done
  fi
else
  log "volumes kept (--volumes removes them)"
fi

# 6. Images, on request, by name.
if [ -n "$images" ]; then
  for img in "${IDEPOOL_IMAGE:-idepool:dev}" "${IDEPOOL_IDE_IMAGE:-idepool-ide:test}" idepool-traefik:v3.6.12 idepool-s3:local; do
    if docker image inspect "$img" >/dev/null 2>&1; then
      if docker image rm "$img" >/dev/null; then log "removed image $img"; else warn "image $img is in use; left in place"; fi
    fi
  done
else
  log "images kept (--images removes them)"
fi
log "done"
