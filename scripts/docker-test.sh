#!/usr/bin/env bash
# End-to-end test of the container deployment: builds the image, runs
# docker-compose.yml (server on Redis, two workers, Redis with AOF) with the
# host-network override, submits a workflow of Python and function tasks
# through the API, kills one worker container mid-run, checks that every task
# completed exactly once, then `down` / `up` and finds the workflow still
# there. Then the bad inputs: a missing, a directory and an unreadable config
# mount, wrong environment values, and a Redis that comes up after the server.
#
#   scripts/docker-test.sh [BINARY]
#
# BINARY: a gleitzeit built on this machine (Debian bookworm, x86-64) that the
# image takes instead of compiling (scripts/test.sh passes the one it built);
# default: a release build in CARGO_TARGET_DIR.
#
# Starts dockerd when no engine answers (and stops it at the end); prints
# `SKIP: reason` and exits 0 when no engine can run here. Base images come
# from scripts/docker-base-images.sh (no registry needed); everything is
# cached under ~/.cache/gleitzeit/docker.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

CACHE="${GLEITZEIT_DOCKER_CACHE:-$HOME/.cache/gleitzeit/docker}"
PROJECT=gleitzeit-e2e
IMAGE=gleitzeit:e2e
PORT="${GLEITZEIT_TEST_DOCKER_PORT:-18765}"
REDIS_PORT="${GLEITZEIT_TEST_DOCKER_REDIS_PORT:-16379}"
export GLEITZEIT_TEST_DOCKER_PORT="$PORT" GLEITZEIT_TEST_DOCKER_REDIS_PORT="$REDIS_PORT"
export GLEITZEIT_IMAGE="$IMAGE" GLEITZEIT_BINARY=prebuilt
SERVER="http://127.0.0.1:$PORT"
WORK=$(mktemp -d)
mkdir -p "$CACHE"

skip() {
  echo "SKIP: the container test cannot run here: $*"
  exit 0
}
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
step() { echo "-- $*"; }

apt_install() { # PACKAGE…: from Debian's packages, refreshing the lists once when needed
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 1
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "$@" >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "$@" >/dev/null 2>&1; }
}

# ---- the engine ---------------------------------------------------------
if ! command -v docker >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    step "installing Debian's docker.io"
    apt_install docker.io || skip "docker.io does not install (apt-get install docker.io)"
  else
    skip "no docker CLI (install Docker, or run as root on Debian to get docker.io)"
  fi
fi
STARTED_DOCKERD=""
if ! docker info >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    skip "no Docker engine answers and starting one needs root"
  fi
  if ! command -v dockerd >/dev/null; then
    apt_install docker.io || skip "no dockerd and docker.io does not install"
  fi
  ENGINE_RUN=/run/gleitzeit-dockerd
  mkdir -p "$ENGINE_RUN"
  export DOCKER_HOST="unix://$ENGINE_RUN/docker.sock"
  # Host networking only: no bridge and no iptables rules, so the engine
  # runs where neither is available; images build with --network host.
  step "starting dockerd (data in $CACHE/engine, log in $CACHE/dockerd.log)"
  dockerd --data-root "$CACHE/engine" --exec-root "$ENGINE_RUN/exec" \
    --pidfile "$ENGINE_RUN/dockerd.pid" -H "$DOCKER_HOST" \
    --bridge=none --iptables=false --ip6tables=false >"$CACHE/dockerd.log" 2>&1 &
  STARTED_DOCKERD=$!
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$STARTED_DOCKERD" 2>/dev/null || break
    sleep 0.5
  done
  if ! docker info >/dev/null 2>&1; then
    tail -15 "$CACHE/dockerd.log" >&2 || true
    kill "$STARTED_DOCKERD" 2>/dev/null || true
    skip "dockerd does not start (its log above)"
  fi
fi

if docker compose version >/dev/null 2>&1; then
  COMPOSE_CMD=(docker compose)
else
  if ! command -v docker-compose >/dev/null; then
    apt_install docker-compose || true
  fi
  command -v docker-compose >/dev/null || skip "neither \`docker compose\` nor docker-compose is installed"
  COMPOSE_CMD=(docker-compose)
fi
compose() {
  "${COMPOSE_CMD[@]}" -p "$PROJECT" -f docker-compose.yml -f docker/compose.host-network.yml "$@"
}

cleanup() {
  local code=$?
  if [ "$code" != 0 ]; then
    echo "== compose logs (last 60 lines a service)" >&2
    compose logs --no-color --tail 60 >&2 2>/dev/null || true
  fi
  compose --profile ollama down -v --remove-orphans >/dev/null 2>&1 || true
  docker rm -f gz-e2e-bad >/dev/null 2>&1 || true
  rm -rf "$WORK"
  if [ -n "$STARTED_DOCKERD" ]; then
    kill "$STARTED_DOCKERD" 2>/dev/null || true
    wait "$STARTED_DOCKERD" 2>/dev/null || true
  fi
  exit "$code"
}
trap cleanup EXIT

# ---- images -------------------------------------------------------------
# BuildKit builds only the stages the image needs (not the Rust one); the
# Docker CLI has it through buildx, and the 20.10 CLI Debian ships has it
# built in.
buildkit_build() {
  if docker buildx version >/dev/null 2>&1; then
    docker buildx build --load "$@"
    return
  fi
  local cli
  for cli in docker /usr/bin/docker; do
    local version
    version=$("$cli" version --format '{{.Client.Version}}' 2>/dev/null || true)
    if [ -n "$version" ] && [ "${version%%.*}" -lt 23 ] 2>/dev/null; then
      DOCKER_BUILDKIT=1 "$cli" build "$@"
      return
    fi
  done
  fail "no BuildKit: install the buildx plugin (Debian: docker.io's own CLI has it built in)"
}

step "base images"
scripts/docker-base-images.sh >/dev/null

BINARY="${1:-${CARGO_TARGET_DIR:-$HOME/.cache/gleitzeit/target}/release/gleitzeit}"
[ -x "$BINARY" ] || fail "no gleitzeit binary at $BINARY (build one, or pass its path)"
mkdir -p docker/prebuilt
if command -v strip >/dev/null; then
  strip -o docker/prebuilt/gleitzeit "$BINARY"
else
  cp "$BINARY" docker/prebuilt/gleitzeit
fi
step "image $IMAGE from $BINARY (stripped: $(du -m docker/prebuilt/gleitzeit | cut -f1) MB)"
buildkit_build --network host -q --build-arg GLEITZEIT_BINARY=prebuilt -t "$IMAGE" . >/dev/null
echo "image size: $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1000/1000}')"

# ---- helpers ------------------------------------------------------------
api() { # METHOD PATH [curl args…]: the response body; fails on HTTP errors
  local method=$1 path=$2
  shift 2
  curl -sS --fail-with-body -X "$method" -H "Authorization: Bearer $API_KEY" "$SERVER$path" "$@"
}
json_field() { # FIELD: reads JSON on stdin, prints one field (a.b.c)
  python3 -c 'import json,sys
v=json.load(sys.stdin)
for k in sys.argv[1].split("."): v=v[int(k)] if isinstance(v,list) else v[k]
print(v if not isinstance(v,(dict,list)) else json.dumps(v))' "$1"
}
wait_healthy() { # SERVICE [SECONDS]: until its health check passes
  local service=$1 limit=${2:-90} id status=""
  for _ in $(seq 1 "$((limit * 2))"); do
    id=$(compose ps -q "$service" 2>/dev/null || true)
    if [ -n "$id" ]; then
      status=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id" 2>/dev/null || true)
      [ "$status" = healthy ] && return 0
    fi
    sleep 0.5
  done
  fail "$service is not healthy after ${limit} s (status: ${status:-no container})"
}
logs_of() { compose logs --no-color "$@" 2>&1; }
logged() { # PATTERN SERVICE…: whether the services' logs have a matching line
  local pattern=$1
  shift
  logs_of "$@" >"$WORK/logs.txt"
  grep -q -- "$pattern" "$WORK/logs.txt"
}

# ---- up: server, two workers, Redis -------------------------------------
step "docker compose up (server, worker-1, worker-2, redis; host network)"
compose down -v --remove-orphans >/dev/null 2>&1 || true
compose up -d --no-build >"$WORK/up.log" 2>&1 || { tail -20 "$WORK/up.log"; fail "compose up failed"; }
wait_healthy redis 60
wait_healthy server 90
wait_healthy worker-1 90
wait_healthy worker-2 90

API_KEY=$(compose exec -T server gleitzeit --json auth init | json_field key)
[ -n "$API_KEY" ] || fail "auth init printed no key"

# 40 Python tasks of ~1 s on 2 × 4 slots (about 5 s of work) and 20
# built-in function calls, then a Python task over all of them.
FLOW="$WORK/flow.yaml"
python3 - "$FLOW" <<'EOF'
import sys
lines = ["name: container-e2e", "tasks:"]
for i in range(40):
    lines += [f"  - id: p{i}", "    method: python/execute", "    parameters:",
              f"      code: \"import time; time.sleep(1.0); result = {i} * 3\""]
for i in range(20):
    lines += [f"  - id: f{i}", "    method: fibonacci", f"    parameters: {{n: {i + 1}}}"]
deps = ", ".join([f"p{i}" for i in range(40)] + [f"f{i}" for i in range(20)])
lines += ["  - id: total", "    method: python/execute", f"    dependencies: [{deps}]",
          "    parameters:", "      code: \"result = " + " + ".join(
              f"${{p{i}.result}}" for i in range(40)) + "\""]
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
EOF
step "submit through the API"
WF=$(api POST /api/v1/workflows -H 'Content-Type: application/yaml' --data-binary @"$FLOW" | json_field workflow_id)
echo "workflow $WF"

completed_count() {
  api GET "/api/v1/workflows/$WF" | python3 -c 'import json,sys
print(sum(1 for t in json.load(sys.stdin)["tasks"] if t["state"] == "completed"))'
}
for _ in $(seq 1 240); do
  [ "$(completed_count)" -ge 1 ] && break
  sleep 0.1
done
VICTIM=$(compose ps -q worker-1)
docker kill "$VICTIM" >/dev/null
DONE_AT_KILL=$(completed_count)
step "docker kill worker-1 mid-run ($DONE_AT_KILL of 61 tasks completed then)"
[ "$DONE_AT_KILL" -lt 61 ] || fail "the workflow had finished before the kill: not a mid-run test"

wait_finished() {
  local state=""
  for _ in $(seq 1 240); do
    state=$(api GET "/api/v1/workflows/$WF" | json_field state)
    case "$state" in completed | failed | cancelled) echo "$state"; return ;; esac
    sleep 0.5
  done
  echo "$state"
}
STATE=$(wait_finished)
if [ "$STATE" != completed ]; then
  api GET "/api/v1/workflows/$WF" | python3 -c 'import json,sys
for t in json.load(sys.stdin)["tasks"]:
    if t["state"] != "completed": print(t["id"], t["state"], t.get("error"))' >&2
  fail "workflow $WF ended $STATE"
fi

check_exactly_once() {
  api GET "/api/v1/workflows/$WF" >"$WORK/view.json"
  : >"$WORK/events.jsonl"
  local after=0 page
  while :; do
    page=$(api GET "/api/v1/workflows/$WF/events?after=$after&limit=1000")
    echo "$page" >>"$WORK/events.jsonl"
    after=$(echo "$page" | python3 -c 'import json,sys
e=json.load(sys.stdin)["events"]; print(e[-1]["seq"] if e else "")')
    [ -n "$after" ] || break
  done
  python3 - "$WORK/view.json" "$WORK/events.jsonl" <<'EOF'
import json, sys
from collections import Counter
view = json.load(open(sys.argv[1]))
tasks = {t["id"]: t for t in view["tasks"]}
assert view["state"] == "completed", view["state"]
assert len(tasks) == 61, len(tasks)
fib = [1, 1]
while len(fib) < 20: fib.append(fib[-1] + fib[-2])
for i in range(40):
    assert tasks[f"p{i}"]["result"] == i * 3, tasks[f"p{i}"]
for t in tasks.values():
    assert t["state"] == "completed", t
assert tasks["total"]["result"] == sum(i * 3 for i in range(40)), tasks["total"]
done = Counter()
for line in open(sys.argv[2]):
    for e in json.loads(line)["events"]:
        if e["type"] == "task_completed":
            done[e["data"]["task_id"]] += 1
assert set(done) == set(tasks), sorted(set(tasks) - set(done))
twice = {k: v for k, v in done.items() if v != 1}
assert not twice, f"results recorded more than once: {twice}"
print(f"all {len(tasks)} tasks completed, each result recorded once")
EOF
}
check_exactly_once
logged "Worker .* joined" worker-1 worker-2 || fail "no worker joined"

# ---- down / up keeps the workflow ----------------------------------------
step "docker compose down (SIGTERM: every container stops cleanly), then up"
compose stop -t 40 >/dev/null 2>&1
for service in server worker-2; do
  code=$(docker inspect -f '{{.State.ExitCode}}' "$(compose ps -q "$service")")
  [ "$code" = 0 ] || { logs_of "$service" | tail -20; fail "$service exited $code on SIGTERM"; }
done
logged "Server stopped." server || fail "the server did not say it stopped"
logged "Worker stopped." worker-2 || fail "worker-2 did not say it stopped"
compose down >/dev/null 2>&1
compose up -d --no-build >"$WORK/up.log" 2>&1 || { tail -20 "$WORK/up.log"; fail "compose up (again) failed"; }
wait_healthy server 90
STATE=$(api GET "/api/v1/workflows/$WF" | json_field state)
[ "$STATE" = completed ] || fail "after down/up the workflow is `$STATE`"
check_exactly_once >/dev/null
echo "after down/up: workflow $WF still there, completed"

# ---- Redis not up yet -----------------------------------------------------
step "Redis not up yet: the server waits with backoff and says so"
compose stop redis >/dev/null 2>&1
compose restart -t 40 server >/dev/null 2>&1 &
RESTART=$!
for _ in $(seq 1 60); do
  logged "waiting for Redis" server && break
  sleep 0.5
done
logs_of server | grep "waiting for Redis" | tail -2
logged "waiting for Redis" server || fail "the server did not say it waits for Redis"
compose start redis >/dev/null 2>&1
wait "$RESTART" || true
wait_healthy server 90
logged "Redis at .* answers" server || fail "the server did not say Redis answers"
[ "$(api GET "/api/v1/workflows/$WF" | json_field state)" = completed ] || fail "workflow lost after the Redis restart"
compose down >/dev/null 2>&1

# ---- bad input: each a GZ error in the container's log, then a clean exit --
bad_run() { # EXPECTED_TEXT DOCKER_RUN_ARGS…: runs the server image once
  local expected=$1
  shift
  docker rm -f gz-e2e-bad >/dev/null 2>&1 || true
  local code=0
  docker run --name gz-e2e-bad --network host -e GLEITZEIT_BACKEND=redis \
    -e GLEITZEIT_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" -e GLEITZEIT_REDIS_WAIT=0 \
    "$@" "$IMAGE" >/dev/null 2>&1 || code=$?
  local log
  log=$(docker logs gz-e2e-bad 2>&1)
  docker rm -f gz-e2e-bad >/dev/null 2>&1 || true
  [ "$code" != 0 ] || fail "expected a failure ($expected), got exit 0: $log"
  grep -q -- "$expected" <<<"$log" || fail "expected \`$expected\` in the log, got: $log"
  echo "   exit $code: $(grep -m1 GZ <<<"$log")"
}
step "bad input: config mount missing, a directory, unreadable; wrong environment values"
bad_run "GZ5001" -e GLEITZEIT_CONFIG=/etc/gleitzeit/config.yaml
mkdir -p "$WORK/not-a-file"
bad_run "It is a directory" -v "$WORK/not-a-file:/etc/gleitzeit/config.yaml:ro" \
  -e GLEITZEIT_CONFIG=/etc/gleitzeit/config.yaml
printf 'server:\n  port: 8765\n' >"$WORK/secret.yaml"
chmod 600 "$WORK/secret.yaml"
bad_run "GZ5002" -v "$WORK/secret.yaml:/etc/gleitzeit/config.yaml:ro" \
  -e GLEITZEIT_CONFIG=/etc/gleitzeit/config.yaml
printf 'server:\n  port: [1\n' >"$WORK/broken.yaml"
chmod 644 "$WORK/broken.yaml"
bad_run "GZ9003" -v "$WORK/broken.yaml:/etc/gleitzeit/config.yaml:ro" \
  -e GLEITZEIT_CONFIG=/etc/gleitzeit/config.yaml
bad_run "GLEITZEIT_PORT=eighty" -e GLEITZEIT_PORT=eighty
bad_run "GLEITZEIT_REDIS_WAIT=soon" -e GLEITZEIT_REDIS_WAIT=soon
bad_run "unknown backend" -e GLEITZEIT_BACKEND=mongodb
bad_run "GZ1001" -e GLEITZEIT_REDIS_URL=redis://127.0.0.1:1/0 -e GLEITZEIT_REDIS_WAIT=2

step "bad input under compose: a wrong value restarts the server cleanly with the same GZ error"
GLEITZEIT_REDIS_WAIT=never compose up -d --no-build server >/dev/null 2>&1 || true
for _ in $(seq 1 60); do
  [ "$(logs_of server | grep -c 'GLEITZEIT_REDIS_WAIT=never')" -ge 2 ] && break
  sleep 0.5
done
[ "$(logs_of server | grep -c 'GLEITZEIT_REDIS_WAIT=never')" -ge 2 ] && logged GZ9003 server ||
  fail "expected the GZ error on every restart: $(logs_of server | tail -5)"
grep -m1 'GLEITZEIT_REDIS_WAIT=never' "$WORK/logs.txt"
compose up -d --no-build server >/dev/null 2>&1
wait_healthy server 90
[ "$(api GET "/api/v1/workflows/$WF" | json_field state)" = completed ] || fail "workflow lost"
echo "fixed: the server is healthy again and the workflow is there"

echo "container e2e: 1 passed, 0 failed"
