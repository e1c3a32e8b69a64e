#!/usr/bin/env bash
# setup-local.sh: idepool on this machine's Docker engine, from a clean engine
# to a working start request, with no registry and no configuration.
#
#   deploy/setup-local.sh          # then open the URL it prints
#   deploy/teardown.sh             # removes it again
#
# What it does (each step is skipped when already done, so it can be re-run):
#   1. Swarm mode (docker swarm init --advertise-addr 127.0.0.1) if inactive;
#   2. the attachable overlay network "idepool";
#   3. the images: deploy/build-images.sh (idepool, the test IDE image),
#      deploy/build-traefik.sh (Traefik, built from source, cached) and
#      deploy/build-s3.sh (versitygw: a local S3 store for the workspaces);
#   4. secrets, all Swarm secrets (they follow idepool to any manager): an
#      API key (generated once into $STATE_DIR/api-key, mode 0600, printed
#      once; idepool reads it through API_KEY_FILE), the key that signs
#      route cookies (ROUTER_SECRET_FILE; made once, inside Swarm only) and
#      the local S3 store's keys, which idepool reads from a .env file
#      (ENV_FILE), not from its environment;
#   5. the stack: deploy/stack.yml with DOMAIN=localhost, plain HTTP on port
#      80 (Traefik, on every manager), the built-in router on port
#      $BUILTIN_PORT (a second Traefik entrypoint that forwards everything
#      to idepool), plus a generated override (small pool and limits, the
#      S3 store, Traefik without HTTPS). The local S3 store is for trying
#      out: one task on the node labelled idepool.s3-store=true (this one,
#      unless a node has the label already), its data on that node's disk;
#      with several managers idepool is kept off that node, so losing one
#      node never takes both;
#   6. waits until idepool answers /api/health and the pool has a warm
#      container, then makes ONE start request (bucket "workspaces", prefix
#      "setup-local/") and opens its URL once to check it answers.
#
# Environment (all optional):
#   STATE_DIR       where the API key and S3 keys live ($HOME/.config/idepool/local)
#   PUBLIC_URL      base of the URLs in start responses (http://localhost);
#                   on a cluster, the entry address users reach
#   BUILTIN_PORT    port of the built-in router's entrypoint (8000; not 8080,
#                   Traefik's own entrypoint for --ping)
#   POOL_SIZE       warm containers (2); CONTAINER_CPU_LIMIT (0.25),
#                   CONTAINER_MEMORY_LIMIT (256MiB) per container
#   IDEPOOL_IMAGE   orchestrator image (idepool:dev); IDEPOOL_IDE_IMAGE (idepool-ide:test)
#   SETUP_TIMEOUT   seconds to wait for idepool and for its pool (300 each)
#   SKIP_BUILD=1    use the images already on this engine
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=deploy/lib.sh
. deploy/lib.sh

STATE_DIR="${STATE_DIR:-${XDG_CONFIG_HOME:-$HOME/.config}/idepool/local}"
POOL_SIZE="${POOL_SIZE:-2}"
CPU_LIMIT="${CONTAINER_CPU_LIMIT:-0.25}"
MEM_LIMIT="${CONTAINER_MEMORY_LIMIT:-256MiB}"
SETUP_TIMEOUT="${SETUP_TIMEOUT:-300}"
export IDEPOOL_IMAGE="${IDEPOOL_IMAGE:-idepool:dev}"
export IDEPOOL_IDE_IMAGE="${IDEPOOL_IDE_IMAGE:-idepool-ide:test}"
S3_IMAGE="idepool-s3:local" # deploy/build-s3.sh
BUCKET="workspaces"         # a directory in that image (see build-s3.sh)
BASE_URL="http://localhost"               # this node's Traefik, for the checks below
PUBLIC_URL="${PUBLIC_URL:-$BASE_URL}"     # what users are handed
BUILTIN_PORT="${BUILTIN_PORT:-8000}"
started=$SECONDS

need_docker
command -v curl >/dev/null || die "curl is needed"

# 1. Swarm.
case "$(swarm_state)" in
active) log "Swarm mode is active" ;;
inactive)
  docker swarm init --advertise-addr 127.0.0.1 >/dev/null
  log "initialised Swarm mode (advertise address 127.0.0.1)"
  ;;
*) die "this engine's Swarm state is '$(swarm_state)'; fix it (docker swarm leave --force, or unlock it) and re-run" ;;
esac
is_manager || die "this engine is a Swarm worker; run setup-local.sh on a manager"

# 2. Network.
ensure_network

# 3. Images.
if [ -z "${SKIP_BUILD:-}" ]; then
  log "images: $IDEPOOL_IMAGE and $IDEPOOL_IDE_IMAGE"
  bash deploy/build-images.sh
  log "image: Traefik (the first build takes minutes; later runs use the cache)"
  bash deploy/build-traefik.sh
  log "image: $S3_IMAGE (versitygw; the first build takes about 3 minutes)"
  bash deploy/build-s3.sh
fi
for img in "$IDEPOOL_IMAGE" "$IDEPOOL_IDE_IMAGE" idepool-traefik:v3.6.12 "$S3_IMAGE"; do
  docker image inspect "$img" >/dev/null 2>&1 || die "image $img is missing (run without SKIP_BUILD)"
done

# 4. Secrets: generated once, kept in STATE_DIR with mode 0600.
mkdir -p "$STATE_DIR"
chmod 700 "$STATE_DIR"
key_file="$STATE_DIR/api-key"
new_key=""
if [ ! -f "$key_file" ]; then
  new_key="idp_$(random_hex 32)"
  write_private "$key_file" "$new_key"
fi
check_private "$key_file"
API_KEY=$(tr -d ' \n' <"$key_file")
s3_file="$STATE_DIR/s3-credentials"
if [ ! -f "$s3_file" ]; then
  write_private "$s3_file" "$(printf 'AWS_ACCESS_KEY_ID=local%s\nAWS_SECRET_ACCESS_KEY=%s' "$(random_hex 8)" "$(random_hex 24)")"
fi
check_private "$s3_file"
s3_access=$(sed -n 's/^AWS_ACCESS_KEY_ID=//p' "$s3_file")
s3_secret=$(sed -n 's/^AWS_SECRET_ACCESS_KEY=//p' "$s3_file")

work=$(mktemp -d)
chmod 700 "$work"
trap 'rm -rf "$work"' EXIT
write_private "$work/idepool.env" "$(printf 'AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s' "$s3_access" "$s3_secret")"
secret=$(env_secret "$work/idepool.env")
key_secret=$(file_secret api-key "$key_file")
router=$(router_secret)

# The local S3 store's node: the one labelled idepool.s3-store=true, else
# this one (labelled now). Several managers: idepool on another one.
store_node=""
for n in $(docker node ls -q); do
  if [ "$(docker node inspect -f '{{index .Spec.Labels "idepool.s3-store"}}' "$n")" = true ]; then store_node=$n; fi
done
if [ -z "$store_node" ]; then
  store_node=$(docker info --format '{{.Swarm.NodeID}}')
  docker node update --label-add idepool.s3-store=true "$store_node" >/dev/null
  log "labelled this node idepool.s3-store=true: the local S3 store runs here"
fi
idepool_constraints="[node.role == manager]"
if [ "$(docker node ls -q --filter role=manager | wc -l)" -gt 1 ]; then
  idepool_constraints="[node.role == manager, node.labels.idepool.s3-store != true]"
fi

# 5. The stack: stack.yml plus this override. A changed image gets a new
# container label, so re-running after a rebuild rolls idepool over (the IDE
# containers are separate services and are adopted by the new task).
image_id=$(docker image inspect --format '{{.Id}}' "$IDEPOOL_IMAGE")
cat >"$work/local.yml" <<YAML
version: "3.8"
services:
  idepool:
    image: $IDEPOOL_IMAGE
    labels:
      idepool.image-id: "$image_id"
    environment:
      ENV_FILE: /run/secrets/idepool.env
      PUBLIC_URL: $PUBLIC_URL
      IDE_CONTAINER_IMAGE: $IDEPOOL_IDE_IMAGE
      PRE_WARMED_QUEUE_SIZE: "$POOL_SIZE"
      CONTAINER_CPU_LIMIT: "$CPU_LIMIT"
      CONTAINER_MEMORY_LIMIT: "$MEM_LIMIT"
      S3_ENDPOINT: http://idepool-s3:7070
      AWS_REGION: us-east-1
    secrets:
      - {source: idepool_env, target: idepool.env, mode: 0400}
    deploy:
      placement:
        constraints: $idepool_constraints
      labels:
        # The built-in router: everything on the entrypoint "builtin" goes
        # to idepool, which proxies /code/<id>/ itself.
        traefik.http.routers.idepool-builtin.rule: PathPrefix(\`/\`)
        traefik.http.routers.idepool-builtin.entrypoints: builtin
        traefik.http.routers.idepool-builtin.service: idepool
  traefik:
    # Plain HTTP on :80 only: no HTTPS entrypoint, no ACME, no dashboard.
    command:
      - --entrypoints.web.address=:80
      - --entrypoints.builtin.address=:$BUILTIN_PORT
      - --providers.swarm.endpoint=unix:///var/run/docker.sock
      - --providers.swarm.exposedByDefault=false
      - --providers.swarm.network=$NETWORK
      - --providers.swarm.refreshSeconds=2
      - --providers.providersThrottleDuration=500ms
      - --providers.swarm.constraints=Label(\`idepool.managed\`,\`$DEPLOYMENT\`) || Label(\`com.docker.stack.namespace\`,\`$STACK\`)
      - --ping=true
    ports:
      - {target: $BUILTIN_PORT, published: $BUILTIN_PORT, mode: host}
  s3:
    # For trying out only: the local S3 store of the workspaces (bucket
    # "$BUCKET"), reachable only on the overlay network, its data on ONE
    # node's disk (pinned there: restarted elsewhere it would start
    # empty). Production uses a real S3 service. Its root keys are in its
    # environment: fine for a store that nothing outside can reach.
    image: $S3_IMAGE
    command: ["--port", ":7070", "posix", "/data"]
    environment:
      ROOT_ACCESS_KEY_ID: "$s3_access"
      ROOT_SECRET_ACCESS_KEY: "$s3_secret"
    volumes:
      - s3-data:/data
    networks:
      $NETWORK:
        aliases: [idepool-s3]
    deploy:
      replicas: 1
      endpoint_mode: dnsrr
      placement:
        constraints: [node.labels.idepool.s3-store == true]
secrets:
  idepool_env:
    external: true
    name: $secret
volumes:
  s3-data:
YAML
if ! docker stack ls --format '{{.Name}}' | grep -x "$STACK" >/dev/null && (: <>/dev/tcp/127.0.0.1/80) 2>/dev/null; then
  die "port 80 is already in use on this machine; Traefik publishes the stack there (stop what listens on it)"
fi
log "deploying the stack $STACK (deploy/stack.yml, DOMAIN=localhost, plain HTTP)"
deploy_flags=(--resolve-image never)
if docker stack deploy --help 2>/dev/null | grep -- '--detach' >/dev/null; then deploy_flags+=(--detach=true); fi
DOMAIN=localhost ACME_EMAIL="" API_KEY_SECRET="$key_secret" ROUTER_SECRET_SECRET="$router" \
  docker stack deploy "${deploy_flags[@]}" -c deploy/stack.yml -c "$work/local.yml" "$STACK" >/dev/null
prune_env_secrets "$secret"
prune_secrets api-key "$key_secret"

# 6. Wait, then one real start request.
health() { curl -fsS -m 5 -o /dev/null "$BASE_URL/api/health" 2>/dev/null; }
if ! wait_for "$SETUP_TIMEOUT" "idepool answers $BASE_URL/api/health" health; then
  stack_logs
  die "idepool did not answer $BASE_URL/api/health within ${SETUP_TIMEOUT}s (logs above)"
fi
auth=(-H "Authorization: Bearer $API_KEY")
warm() {
  local n
  n=$(curl -fsS -m 5 "${auth[@]}" "$BASE_URL/api/pool" 2>/dev/null | grep -o '"warm":[0-9]*' | head -1 | cut -d: -f2)
  [ "${n:-0}" -ge 1 ]
}
if ! wait_for "$SETUP_TIMEOUT" "the pool has a warm container" warm; then
  curl -sS -m 5 "${auth[@]}" "$BASE_URL/api/pool" >&2 || true
  stack_logs
  die "no warm container within ${SETUP_TIMEOUT}s (pool and logs above)"
fi

body="$work/start.json"
code=$(curl -sS -m 90 -o "$body" -w '%{http_code}' -X POST "${auth[@]}" -H 'Content-Type: application/json' \
  -d "{\"s3Bucket\":\"$BUCKET\",\"s3Prefix\":\"setup-local/\",\"userId\":\"setup-local\"}" \
  "$BASE_URL/api/containers/start?wait=ready&timeout=60s") || die "start request failed"
if [ "$code" != 201 ] && [ "$code" != 200 ]; then
  cat "$body" >&2
  echo >&2
  stack_logs
  die "start request answered $code (body above)"
fi
url=$(grep -o '"codeServer":"[^"]*"' "$body" | head -1 | cut -d'"' -f4)
id=$(grep -o '"id":"[^"]*"' "$body" | head -1 | cut -d'"' -f4)
[ -n "$url" ] || die "no codeServer URL in the start answer: $(cat "$body")"
# Open it once, as a browser would: the one-time token becomes a cookie
# (a redirect), then the IDE answers through Traefik.
open_url() {
  local st
  st=$(curl -sS -m 10 -L -c "$work/jar" -b "$work/jar" -o /dev/null -w '%{http_code}' "$1" 2>/dev/null) || return 1
  [ "$st" = 200 ]
}
if ! wait_for 60 "container $id answers through Traefik" open_url "$url"; then
  stack_logs
  die "the start answered $code but $url did not answer 200 within 60s"
fi
# That token is spent; a fresh one for the person running this script.
code=$(curl -sS -m 90 -o "$body" -w '%{http_code}' -X POST "${auth[@]}" -H 'Content-Type: application/json' \
  -d "{\"s3Bucket\":\"$BUCKET\",\"s3Prefix\":\"setup-local/\",\"userId\":\"setup-local\"}" \
  "$BASE_URL/api/containers/start")
url=$(grep -o '"codeServer":"[^"]*"' "$body" | head -1 | cut -d'"' -f4)

echo
echo "idepool is running on this machine (stack $STACK, set up in $((SECONDS - started))s)."
if [ -n "$new_key" ]; then
  echo
  echo "API key (shown once; stored in $key_file, mode 0600):"
  echo
  echo "    $new_key"
else
  echo "API key: in $key_file"
fi
cat <<EOF

A container for workspace s3://$BUCKET/setup-local/ (id $id) is running. Open:

    $url

API:       curl -H "Authorization: Bearer \$(cat $key_file)" $PUBLIC_URL/api/pool
Dashboard: $PUBLIC_URL/dashboard
Built-in router: the same URLs on port $BUILTIN_PORT (Traefik forwards all of it to idepool)
Remove:    deploy/teardown.sh   (--volumes also drops the workspaces' store)
EOF
