#!/usr/bin/env bash
# The MCP reference servers the tests talk to, installed from the npm registry
# with the machine's npm into ~/.cache/gleitzeit/mcp (once; later runs reuse it).
# Prints MCP_DIR=... (the folder holding node_modules).
set -euo pipefail
VERSION="2026.8.31"
DIR="${GLEITZEIT_MCP_CACHE:-$HOME/.cache/gleitzeit/mcp}"
STAMP="$DIR/.installed-$VERSION"
log() { echo "[mcp-test-servers] $*" >&2; }
command -v node >/dev/null || { log "node not found: install Node.js (the MCP tests run the reference servers with it)"; exit 1; }
command -v npm >/dev/null || { log "npm not found"; exit 1; }
mkdir -p "$DIR"
# Parallel test processes may all ask at once: one installs, the others wait.
exec 9>"$DIR/.lock"
flock 9
if [[ ! -f "$STAMP" ]]; then
  [[ -f "$DIR/package.json" ]] || echo '{"private": true}' >"$DIR/package.json"
  log "npm install @modelcontextprotocol/server-everything@$VERSION server-filesystem@$VERSION into $DIR"
  (cd "$DIR" && npm install --no-audit --no-fund --silent \
    "@modelcontextprotocol/server-everything@$VERSION" \
    "@modelcontextprotocol/server-filesystem@$VERSION" >&2)
  touch "$STAMP"
fi
echo "MCP_DIR=$DIR"
