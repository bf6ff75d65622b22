#!/usr/bin/env bash
# What the dashboard's browser test needs: Debian's `chromium` (installed with
# apt when missing and we are root) and the npm package `playwright-core` —
# only the driver, it downloads no browser — cached in
# ~/.cache/gleitzeit/playwright (once; later runs reuse it).
# Prints PLAYWRIGHT_DIR=... (the folder holding node_modules).
set -euo pipefail
VERSION="1.65.1"
DIR="${GLEITZEIT_PLAYWRIGHT_CACHE:-$HOME/.cache/gleitzeit/playwright}"
STAMP="$DIR/.installed-$VERSION"
log() { echo "[browser-test-deps] $*" >&2; }
mkdir -p "$DIR"
# Parallel test processes may all ask at once: one installs, the others wait.
exec 9>"$DIR/.lock"
flock 9
if [[ ! -x /usr/bin/chromium ]]; then
  if [[ "$(id -u)" = 0 ]] && command -v apt-get >/dev/null; then
    log "apt-get install chromium"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-liberation >&2
  else
    log "/usr/bin/chromium not found: install Debian's chromium package (the dashboard's browser test drives it)"
    exit 1
  fi
fi
command -v node >/dev/null || { log "node not found: install Node.js (the browser test runs playwright-core with it)"; exit 1; }
command -v npm >/dev/null || { log "npm not found"; exit 1; }
if [[ ! -f "$STAMP" ]]; then
  [[ -f "$DIR/package.json" ]] || echo '{"private": true}' >"$DIR/package.json"
  log "npm install playwright-core@$VERSION into $DIR"
  (cd "$DIR" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund --silent \
    "playwright-core@$VERSION" >&2)
  touch "$STAMP"
fi
echo "PLAYWRIGHT_DIR=$DIR"
