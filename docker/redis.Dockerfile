# Redis from Debian's package, for machines that reach Debian's mirror but no
# container registry (scripts/docker-base-images.sh tags it as the image
# docker-compose.yml names). It runs the same command line as the official
# image: `redis-server ARGS…` as the redis user, data in /data.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data && chown redis:redis /data
VOLUME /data
WORKDIR /data
USER redis
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no"]
