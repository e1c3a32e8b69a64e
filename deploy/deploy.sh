#!/usr/bin/env bash
# deploy.sh: deploys (or updates) idepool in production on a Docker Swarm
# manager: deploy/stack.yml with HTTPS from Let's Encrypt for DOMAIN.
#
#   DOMAIN=ide.example.com ACME_EMAIL=ops@example.com API_KEY=$(openssl rand -base64 32) \
#     IDEPOOL_ENV_FILE=/etc/idepool/idepool.env deploy/deploy.sh
#   deploy/deploy.sh --dry-run      # print the merged stack, change nothing
#
# Required: DOMAIN (a DNS name pointing at this node; localhost and IP
# addresses are for deploy/setup-local.sh), API_KEY (32+ characters; several
# comma-separated), ACME_EMAIL (the Let's Encrypt account).
# Optional:
#   IDEPOOL_ENV_FILE  a .env file of any settings of ENVIRONMENT_VARIABLES.md
#                     (S3, profiles, limits, CORS_ORIGINS, FRAME_ANCESTORS, ...)
#                     except the names the stack sets itself (RUNTIME, ROUTER,
#                     DEPLOYMENT, SWARM_NETWORK, DOMAIN, AGENT_URL, DATA_DIR,
#                     IDE_CONTAINER_IMAGE, PRE_WARMED_QUEUE_SIZE, API_KEY)
#   PUBLIC_URL        base of the URLs in start responses (https://DOMAIN)
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, S3_ENDPOINT, AWS_REGION
#                     added to that file
#   IDE_CONTAINER_IMAGE (idepool-ide:test), PRE_WARMED_QUEUE_SIZE (10)
#   IDEPOOL_IMAGE     the orchestrator image (idepool:dev; a registry reference
#                     such as registry.example.com/idepool:1.4 on a multi-node
#                     Swarm, built from deploy/Dockerfile)
#   BUILD_IMAGES=1    build idepool:dev, idepool-ide:test and Traefik here first
#   DEPLOY_TIMEOUT    seconds to wait for idepool to answer (300)
#
# The S3 keys and everything in IDEPOOL_ENV_FILE reach idepool as one Docker
# secret, read through ENV_FILE: not in its environment, not in `docker
# service inspect`. API_KEY becomes a Swarm secret too (API_KEY_FILE), and
# the key that signs route cookies is one made once inside Swarm
# (ROUTER_SECRET_FILE): idepool moved to another manager keeps both, so a
# failover logs nobody out.
#
# Images on a cluster: every node that may run idepool (any manager) and
# the IDE containers (any node) needs the images. With a registry, push them
# there and set IDEPOOL_IMAGE / IDE_CONTAINER_IMAGE to the registry's
# references; without one, load them on each node (docker save | ssh NODE
# docker load), as deploy/cluster-local.sh does.
#
# Re-running it is the upgrade: only the idepool service is replaced, stop
# first (one orchestrator at a time). The IDE containers are separate
# services, not part of the stack: they keep running, users stay connected
# (their traffic goes through Traefik, not idepool), and the new idepool
# adopts them from their labels. See docs/operations.md.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=deploy/lib.sh
. deploy/lib.sh

dry_run=""
for arg in "$@"; do
  case "$arg" in
  --dry-run) dry_run=1 ;;
  -h | --help)
    sed -n '2,45p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *) die "unknown argument $arg (want --dry-run)" ;;
  esac
done

# Refuse to run without what production needs.
DOMAIN="${DOMAIN:-}"
API_KEY="${API_KEY:-}"
ACME_EMAIL="${ACME_EMAIL:-}"
[ -n "$DOMAIN" ] || die "DOMAIN is not set: the public DNS name of this deployment (e.g. ide.example.com)"
case "$DOMAIN" in
localhost | *.localhost | *[!a-zA-Z0-9.-]* | [0-9]*.[0-9]*.[0-9]*.[0-9]*)
  die "DOMAIN=$DOMAIN is not a public DNS name; for this machine use deploy/setup-local.sh"
  ;;
*.*) ;;
*) die "DOMAIN=$DOMAIN is not a fully qualified DNS name" ;;
esac
[ -n "$API_KEY" ] || die "API_KEY is not set (openssl rand -base64 32 makes one)"
IFS=',' read -ra keys <<<"$API_KEY"
for k in "${keys[@]}"; do
  k="${k// /}"
  [ "${#k}" -ge 32 ] || die "API_KEY: every key needs 32+ characters (openssl rand -base64 32 makes one)"
done
case "$ACME_EMAIL" in
?*@?*.?*) ;;
*) die "ACME_EMAIL is not set to an e-mail address (Let's Encrypt's account for $DOMAIN)" ;;
esac
if [ -n "${IDEPOOL_ENV_FILE:-}" ]; then
  [ -f "$IDEPOOL_ENV_FILE" ] || die "IDEPOOL_ENV_FILE=$IDEPOOL_ENV_FILE does not exist"
  check_private "$IDEPOOL_ENV_FILE"
fi
IDEPOOL_IMAGE="${IDEPOOL_IMAGE:-idepool:dev}"
IDE_IMAGE="${IDE_CONTAINER_IMAGE:-idepool-ide:test}"
POOL_SIZE="${PRE_WARMED_QUEUE_SIZE:-10}"
DEPLOY_TIMEOUT="${DEPLOY_TIMEOUT:-300}"

need_docker
if [ -z "$dry_run" ]; then
  [ "$(swarm_state)" = active ] || die "this engine is not in Swarm mode; on the manager: docker swarm init --advertise-addr <this node's address>"
  is_manager || die "this engine is a Swarm worker; run deploy.sh on a manager"
  ensure_network
  if [ -n "${BUILD_IMAGES:-}" ]; then
    bash deploy/build-images.sh
    bash deploy/build-traefik.sh
  fi
fi

work=$(mktemp -d)
chmod 700 "$work"
trap 'rm -rf "$work"' EXIT

# The .env secret: the operator's file, then what the environment adds.
{
  if [ -n "${IDEPOOL_ENV_FILE:-}" ]; then cat "$IDEPOOL_ENV_FILE" && echo; fi
  for v in AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION S3_ENDPOINT; do
    if [ -n "${!v:-}" ]; then echo "$v=${!v}"; fi
  done
} >"$work/idepool.env"
chmod 600 "$work/idepool.env"
(umask 077 && printf '%s\n' "$API_KEY" >"$work/api-key")
if [ -n "$dry_run" ]; then
  secret="$STACK-env-DRYRUN" key_secret="$STACK-api-key-DRYRUN" router="$STACK-router-secret"
else
  secret=$(env_secret "$work/idepool.env")
  key_secret=$(file_secret api-key "$work/api-key")
  router=$(router_secret)
fi

resolve=never
case "$IDEPOOL_IMAGE" in */*) resolve=always ;; esac
if [ "$resolve" = never ] && [ -z "$dry_run" ]; then
  docker image inspect "$IDEPOOL_IMAGE" >/dev/null 2>&1 ||
    die "image $IDEPOOL_IMAGE is not on this node (BUILD_IMAGES=1 builds it; a multi-node Swarm needs a registry image)"
fi

cat >"$work/production.yml" <<YAML
version: "3.8"
services:
  idepool:
    image: $IDEPOOL_IMAGE
    environment:
      # Set here, these win over the secret's .env (ENV_FILE).
      IDE_CONTAINER_IMAGE: "$IDE_IMAGE"
      PRE_WARMED_QUEUE_SIZE: "$POOL_SIZE"
      ENV_FILE: /run/secrets/idepool.env
      DOMAIN: $DOMAIN
    secrets:
      - {source: idepool_env, target: idepool.env, mode: 0400}
    # Shutdown closes the API and the agents' channel; the containers stay.
    stop_grace_period: 20s
    deploy:
      # One orchestrator at a time: the old task stops before the new one
      # starts (claims are decided in memory). Roll back if it fails.
      update_config: {parallelism: 1, order: stop-first, failure_action: rollback, monitor: 30s}
      rollback_config: {parallelism: 1, order: stop-first}
      labels:
        traefik.http.routers.idepool.rule: Host(\`$DOMAIN\`)
        traefik.http.routers.idepool.entrypoints: websecure
        traefik.http.routers.idepool.tls: "true"
        traefik.http.routers.idepool.tls.certresolver: letsencrypt
  traefik:
    # HTTPS with Let's Encrypt; HTTP only redirects (and answers ACME's
    # challenge). No --api: Traefik's dashboard and API are off.
    command:
      - --entrypoints.web.address=:80
      - --entrypoints.web.http.redirections.entrypoint.to=websecure
      - --entrypoints.web.http.redirections.entrypoint.scheme=https
      - --entrypoints.websecure.address=:443
      - --providers.swarm.endpoint=unix:///var/run/docker.sock
      - --providers.swarm.exposedByDefault=false
      - --providers.swarm.network=$NETWORK
      - --providers.swarm.refreshSeconds=2
      - --providers.providersThrottleDuration=500ms
      - --providers.swarm.constraints=Label(\`idepool.managed\`,\`$DEPLOYMENT\`) || Label(\`com.docker.stack.namespace\`,\`$STACK\`)
      - --certificatesresolvers.letsencrypt.acme.email=$ACME_EMAIL
      - --certificatesresolvers.letsencrypt.acme.storage=/acme/acme.json
      - --certificatesresolvers.letsencrypt.acme.httpchallenge.entrypoint=web
      - --ping=true
secrets:
  idepool_env:
    external: true
    name: $secret
YAML

if [ -n "$dry_run" ]; then
  # The key is shown as "redacted" here; the real one is deployed.
  DOMAIN="$DOMAIN" PUBLIC_URL="${PUBLIC_URL:-}" ACME_EMAIL="$ACME_EMAIL" \
    API_KEY_SECRET="$key_secret" ROUTER_SECRET_SECRET="$router" \
    docker stack config -c deploy/stack.yml -c "$work/production.yml"
  exit 0
fi

log "deploying the stack $STACK for https://$DOMAIN"
deploy_flags=(--with-registry-auth --resolve-image "$resolve")
# Do not wait for convergence here (unbounded); the health wait below is.
if docker stack deploy --help 2>/dev/null | grep -- '--detach' >/dev/null; then deploy_flags+=(--detach=true); fi
DOMAIN="$DOMAIN" PUBLIC_URL="${PUBLIC_URL:-}" ACME_EMAIL="$ACME_EMAIL" \
  API_KEY_SECRET="$key_secret" ROUTER_SECRET_SECRET="$router" \
  docker stack deploy "${deploy_flags[@]}" -c deploy/stack.yml -c "$work/production.yml" "$STACK"
prune_env_secrets "$secret"
prune_secrets api-key "$key_secret"

# idepool answers on this node first (certificate or not), then publicly.
local_health() { curl -fsS -k -m 5 -o /dev/null --resolve "$DOMAIN:443:127.0.0.1" "https://$DOMAIN/api/health" 2>/dev/null; }
if ! wait_for "$DEPLOY_TIMEOUT" "idepool answers https://$DOMAIN/api/health on this node" local_health; then
  stack_logs
  die "idepool did not answer within ${DEPLOY_TIMEOUT}s (logs above)"
fi
if curl -fsS -m 10 -o /dev/null "https://$DOMAIN/api/health" 2>/dev/null; then
  log "https://$DOMAIN answers with a valid certificate"
else
  warn "https://$DOMAIN does not answer with a valid certificate yet: check that DNS points here and ports 80 and 443 are open (docker service logs ${STACK}_traefik)"
fi
cat <<EOF

idepool is deployed: https://$DOMAIN (API https://$DOMAIN/api, dashboard https://$DOMAIN/dashboard).
Re-run deploy.sh to upgrade: idepool restarts, the IDE containers and their users do not notice.
EOF
