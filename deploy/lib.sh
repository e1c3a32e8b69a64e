# shellcheck shell=bash
# Shared helpers of setup-local.sh, deploy.sh and teardown.sh (sourced, not
# run). Everything here touches only what is ours: the stack named $STACK,
# services labelled idepool.managed=$DEPLOYMENT, the overlay network
# $NETWORK, and Docker secrets named ${STACK}-env-*.

# Names fixed by deploy/stack.yml: the stack, its overlay network and the
# deployment (value of the idepool.managed label) are all "idepool".
STACK="${STACK:-idepool}"
NETWORK="${NETWORK:-idepool}"
DEPLOYMENT="${DEPLOYMENT:-idepool}"

log() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# need_docker fails unless a Docker engine answers.
need_docker() {
  command -v docker >/dev/null || die "docker is not installed"
  docker info >/dev/null 2>&1 || die "the Docker engine does not answer (is it running? may this user use /var/run/docker.sock?)"
}

# swarm_state prints inactive, pending, active, error or locked.
swarm_state() { docker info --format '{{.Swarm.LocalNodeState}}'; }

# is_manager succeeds when this engine is a Swarm manager.
is_manager() { [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" = "true" ]; }

# ensure_network creates the attachable overlay network the stack declares,
# labelled as the stack's own so that `docker stack deploy` adopts it rather
# than failing on a name clash. A network of that name that is not ours
# stops the script: we never take over someone else's network.
ensure_network() {
  if docker network inspect "$NETWORK" >/dev/null 2>&1; then
    local driver ns attachable
    driver=$(docker network inspect -f '{{.Driver}}' "$NETWORK")
    attachable=$(docker network inspect -f '{{.Attachable}}' "$NETWORK")
    ns=$(docker network inspect -f '{{index .Labels "com.docker.stack.namespace"}}' "$NETWORK")
    if [ "$driver" != overlay ] || [ "$attachable" != true ] || [ "$ns" != "$STACK" ]; then
      die "a network named $NETWORK exists but is not this stack's (driver $driver, attachable $attachable, stack '${ns}'); remove it or rename it"
    fi
    log "network $NETWORK exists"
    return
  fi
  # Swarm's default pool gives a /24: about 250 addresses, fewer than a
  # class of 300 claimed plus its warm pool. NETWORK_SUBNET (e.g.
  # 10.250.0.0/20) makes it larger.
  local subnet=()
  if [ -n "${NETWORK_SUBNET:-}" ]; then subnet=(--subnet "$NETWORK_SUBNET"); fi
  docker network create --driver overlay --attachable "${subnet[@]}" \
    --label "com.docker.stack.namespace=$STACK" --label "idepool.managed=$DEPLOYMENT" "$NETWORK" >/dev/null
  log "created the attachable overlay network $NETWORK${NETWORK_SUBNET:+ ($NETWORK_SUBNET)}"
}

# random_hex N prints N random bytes as hex.
random_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

# write_private FILE CONTENT writes CONTENT to FILE with mode 0600, never
# readable by others even for an instant.
write_private() {
  local f=$1 content=$2
  (umask 077 && printf '%s\n' "$content" >"$f.tmp.$$")
  mv "$f.tmp.$$" "$f"
}

# check_private FILE fails when FILE is readable by group or others.
check_private() {
  local mode
  mode=$(stat -c '%a' "$1")
  case "$mode" in
  600 | 400) ;;
  *) die "$1 has mode $mode: it holds a secret; chmod 600 it" ;;
  esac
}

# file_secret KIND FILE creates (if missing) the Docker secret holding FILE
# and prints its name: ${STACK}-KIND-<sha256 prefix>. Secrets are immutable,
# so a changed file gets a new name and the service update switches to it;
# old ones are removed by prune_secrets. KIND: env, api-key.
file_secret() {
  local kind=$1 f=$2 name
  name="$STACK-$kind-$(sha256sum "$f" | cut -c1-12)"
  if ! docker secret inspect "$name" >/dev/null 2>&1; then
    docker secret create --label "idepool.managed=$DEPLOYMENT" --label "idepool.secret=$kind" "$name" "$f" >/dev/null
  fi
  printf '%s\n' "$name"
}

# env_secret FILE: the secret of the .env file idepool reads (ENV_FILE).
env_secret() { file_secret env "$1"; }

# router_secret prints the name of the Swarm secret holding the key that
# signs route cookies (ROUTER_SECRET_FILE), creating it once from random
# bytes. It is never rotated by a deploy: a new key would log every user
# out. Nobody needs to read it, so it exists only inside Swarm.
router_secret() {
  local name="$STACK-router-secret"
  if ! docker secret inspect "$name" >/dev/null 2>&1; then
    random_hex 32 | docker secret create --label "idepool.managed=$DEPLOYMENT" --label "idepool.secret=router-secret" \
      "$name" - >/dev/null
  fi
  printf '%s\n' "$name"
}

# prune_secrets KIND KEEP removes this stack's KIND secrets other than KEEP
# that no service uses any more (Docker refuses to remove one in use).
prune_secrets() {
  local kind=$1 keep=$2 s
  for s in $(docker secret ls --filter "label=idepool.managed=$DEPLOYMENT" --format '{{.Name}}'); do
    case "$s" in "$STACK-$kind"-*) ;; *) continue ;; esac
    [ "$s" = "$keep" ] && continue
    docker secret rm "$s" >/dev/null 2>&1 || true
  done
}

# prune_env_secrets KEEP: prune_secrets env KEEP.
prune_env_secrets() { prune_secrets env "$1"; }

# STACK_VOLUMES are the named volumes deploy/stack.yml and the scripts'
# overrides declare (Docker names them <stack>_<name>); idepool-data is
# that of older stacks.
STACK_VOLUMES="traefik-acme s3-data idepool-data"

# wait_for SECONDS DESCRIPTION COMMAND... runs COMMAND every 2 s until it
# succeeds; fails after SECONDS.
wait_for() {
  local secs=$1 what=$2
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      return 1
    fi
    sleep 2
  done
  log "$what (at ${SECONDS}s)"
}

# stack_logs prints the tail of the stack's service logs (for failures).
stack_logs() {
  local svc
  for svc in $(docker stack services "$STACK" --format '{{.Name}}' 2>/dev/null); do
    echo "--- docker service ps $svc"
    docker service ps --no-trunc --format '{{.Name}} {{.CurrentState}} {{.Error}}' "$svc" 2>&1 | head -5
    echo "--- docker service logs $svc (last 30 lines)"
    docker service logs --raw --tail 30 "$svc" 2>&1 | tail -30
  done >&2
}
