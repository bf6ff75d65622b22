#!/usr/bin/env bash
# Makes the two images the Dockerfile and docker-compose.yml start from,
# `debian:bookworm-slim` and `redis:7.0-bookworm`, on a machine that reaches
# Debian's package mirror but no container registry: the Debian root file
# system comes from debootstrap (cached under ~/.cache/gleitzeit/docker) and
# is imported under the standard name, so the same Dockerfile builds unchanged
# where the images are pulled instead. Redis is Debian's redis-server package
# on that base. An image that already exists is left alone.
#
# Needs: a Docker engine answering (DOCKER_HOST), root, debootstrap.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${GLEITZEIT_DOCKER_CACHE:-$HOME/.cache/gleitzeit/docker}"
MIRROR="${GLEITZEIT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BASE_IMAGE=debian:bookworm-slim
REDIS_IMAGE=redis:7.0-bookworm
mkdir -p "$CACHE"

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  ROOTFS_TAR="$CACHE/bookworm-slim-rootfs.tar"
  if [ ! -s "$ROOTFS_TAR" ]; then
    if ! command -v debootstrap >/dev/null; then
      export DEBIAN_FRONTEND=noninteractive
      apt-get install -y -qq debootstrap >/dev/null 2>&1 ||
        { apt-get update -qq >/dev/null && apt-get install -y -qq debootstrap >/dev/null; }
    fi
    WORK="$CACHE/rootfs-work"
    rm -rf "$WORK"
    echo "debootstrap bookworm (minbase) into $WORK" >&2
    debootstrap --variant=minbase bookworm "$WORK" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 || {
      tail -20 "$CACHE/debootstrap.log" >&2
      exit 1
    }
    # What Debian's own slim image does: no documentation, manuals or
    # translations now or from later installs, no package lists or archives.
    cat >"$WORK/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
    cat >"$WORK/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    echo 'APT::Install-Recommends "false";' >"$WORK/etc/apt/apt.conf.d/docker-no-recommends"
    rm -f "$WORK/etc/apt/sources.list"
    cat >"$WORK/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${MIRROR%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    find "$WORK/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    rm -rf "$WORK"/usr/share/{man,info,locale,lintian}/* "$WORK"/var/cache/apt/* \
      "$WORK"/var/lib/apt/lists/* "$WORK"/var/log/* "$WORK"/tmp/* "$WORK"/root/.bash_history
    tar -C "$WORK" --numeric-owner -cf "$ROOTFS_TAR.part" .
    mv "$ROOTFS_TAR.part" "$ROOTFS_TAR"
    rm -rf "$WORK"
  fi
  echo "importing $ROOTFS_TAR as $BASE_IMAGE" >&2
  docker import --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$ROOTFS_TAR" "$BASE_IMAGE" >/dev/null
fi

if ! docker image inspect "$REDIS_IMAGE" >/dev/null 2>&1; then
  echo "building $REDIS_IMAGE from Debian's redis-server package" >&2
  docker build --network host -q -t "$REDIS_IMAGE" -f docker/redis.Dockerfile docker >/dev/null
fi
echo "BASE_IMAGES=$BASE_IMAGE,$REDIS_IMAGE"
