#!/usr/bin/env bash
# Makes sure a Redis answers for the tests and benchmarks:
#   scripts/redis-for-tests.sh [URL]   (default redis://127.0.0.1:6379)
# Installs redis-server with apt when it is missing and we are root. If
# nothing answers at URL, starts a private one on a free loopback port that
# keeps nothing on disk. Prints one line: `REDIS_URL=<url> STARTED=<0|1>`;
# with STARTED=1 the caller shuts it down (`redis-cli -u URL shutdown nosave`).
set -euo pipefail
URL="${1:-redis://127.0.0.1:6379}"
if ! command -v redis-server >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq >&2 && apt-get install -y -qq redis-server >/dev/null
  else
    echo "redis-server not found: install Redis (the scale-out tests need it)" >&2
    exit 1
  fi
fi
if redis-cli -u "$URL" ping 2>/dev/null | grep -q PONG; then
  echo "REDIS_URL=$URL STARTED=0"
  exit 0
fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
DIR="$HOME/.cache/gleitzeit/redis-$PORT"
mkdir -p "$DIR"
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$DIR" --daemonize yes --pidfile "$DIR/redis.pid" >/dev/null
URL="redis://127.0.0.1:$PORT"
for _ in $(seq 50); do
  redis-cli -u "$URL" ping 2>/dev/null | grep -q PONG && break
  sleep 0.1
done
echo "REDIS_URL=$URL STARTED=1"
