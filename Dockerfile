# Gleitzeit in a container: `gleitzeit serve` (the default command) and
# `gleitzeit worker` from one image. docker-compose.yml runs the server on
# Redis with two workers; README.md "Containers" tells the whole story.
#
#   docker build -t gleitzeit .
#       compiles the binary from this checkout (rust:1-bookworm) with the
#       `dist` profile: release plus fat LTO, one codegen unit, stripped
#   docker build --build-arg GLEITZEIT_BINARY=prebuilt -t gleitzeit .
#       takes docker/prebuilt/gleitzeit instead: a binary built on a Debian
#       bookworm (glibc 2.36) x86-64 host, as scripts/docker-test.sh does so
#       the test suite compiles nothing twice
#
# BuildKit (the default builder of current Docker) builds only the stage the
# final image copies from, so the prebuilt path needs no Rust image.

ARG GLEITZEIT_BINARY=source

FROM rust:1-bookworm AS source
WORKDIR /src
COPY . .
RUN cargo build --profile dist --locked -p gleitzeit-cli \
    && install -D -m 0755 target/dist/gleitzeit /out/gleitzeit

FROM scratch AS prebuilt
COPY docker/prebuilt/gleitzeit /out/gleitzeit

FROM ${GLEITZEIT_BINARY} AS binary

FROM debian:bookworm-slim
# python3 runs `python/*` tasks; everything else is in the one binary
# (TLS is rustls, so no OpenSSL or CA bundle is needed for the binary itself).
# What no task can use goes: the pydoc topics (`help()` on a keyword) and the
# CPython regression-test package. The byte-code the package compiled for the
# whole standard library goes too, then is compiled again for just the modules
# the worker process imports at start, so a worker starts as fast as before;
# what a task imports beyond them is compiled in memory when it is imported
# (PYTHONDONTWRITEBYTECODE below, and /usr is not writable for uid 10001).
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* \
    && PYLIB=$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))') \
    && rm -rf "$PYLIB/pydoc_data" "$PYLIB/test" "$PYLIB/ensurepip" \
       "$PYLIB/idlelib" "$PYLIB/tkinter" "$PYLIB/turtledemo" "$PYLIB/lib2to3" \
    && find /usr/lib/python3* -depth -name __pycache__ -type d -exec rm -rf {} + \
    && python3 -c 'import builtins, faulthandler, importlib, importlib.util, io, json, linecache, os, resource, sys, traceback' \
    && useradd --uid 10001 --user-group --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin gleitzeit \
    && mkdir -p /data /etc/gleitzeit \
    && chown gleitzeit:gleitzeit /data
COPY --from=binary /out/gleitzeit /usr/local/bin/gleitzeit
RUN ln -s gleitzeit /usr/local/bin/gz

# The store, saved credentials and the SQLite database (when the backend is
# sqlite) live in /data; keys are never part of the image.
# GLEITZEIT_REDIS_WAIT: a server or worker started before Redis answers keeps
# trying (with backoff, saying so) for this many seconds instead of exiting.
ENV GLEITZEIT_HOME=/data \
    GLEITZEIT_HOST=0.0.0.0 \
    GLEITZEIT_PORT=8765 \
    GLEITZEIT_REDIS_WAIT=60 \
    PYTHONDONTWRITEBYTECODE=1
VOLUME /data
WORKDIR /data
USER gleitzeit
EXPOSE 8765
# SIGTERM drains: the server records tasks in flight (server.grace_seconds),
# a worker lets its running calls finish (--grace); give them the time with
# `docker stop --time` / compose's stop_grace_period.
STOPSIGNAL SIGTERM
# Healthy or degraded (e.g. no LLM endpoint answers yet) both mean the API
# answers; unhealthy or unreachable fail the check.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD gleitzeit --server "http://127.0.0.1:${GLEITZEIT_PORT}" health --quiet; [ $? -le 1 ]
CMD ["gleitzeit", "serve"]
