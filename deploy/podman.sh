# Daemonless OCI tooling for hosts without Docker: podman/buildah with throwaway storage and a
# Debian base image made with debootstrap (no registry needed). Sourced by scripts/container_test.sh.
#
#   zoo_ensure_tools              install buildah podman runc debootstrap with apt-get when missing
#   zoo_podman_env WORKDIR        write containers.conf + storage.conf under WORKDIR and export them
#   zoo_base_image IMAGE WORKDIR  import (or first debootstrap, cached) IMAGE = Debian bookworm + python3
#   zoo_podman_teardown           remove every container and image in that storage, unmount it
#
# Facts behind the settings (found by trying on the CI host, see issue 7 and docs/deployment.md):
# crun fails on a cgroup-v1/hybrid host -> runc + cgroupfs; raising ulimits is not permitted -> fixed
# default_ulimits; storage under WORKDIR so a run leaves no images behind.

ZOO_TOOLS=(buildah podman runc debootstrap)
ZOO_CACHE_DIR=${MODEL_ZOO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/model-zoo}
ZOO_SUITE=bookworm   # Debian 12: python3.11, the same minor version as the CI venv

zoo_log() { echo "container-test: $*" >&2; }

# Run as root directly, else through sudo when there is one (debootstrap and rootful podman need root).
zoo_as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else zoo_log "needs root for: $* (no sudo found)"; return 1
    fi
}

zoo_ensure_tools() {
    local missing=() tool
    for tool in "${ZOO_TOOLS[@]}"; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || {
        zoo_log "missing ${missing[*]} and no apt-get: install buildah, podman, runc and debootstrap"
        return 1
    }
    zoo_log "installing ${ZOO_TOOLS[*]} with apt-get (missing: ${missing[*]})"
    zoo_as_root apt-get update -q
    zoo_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        "${ZOO_TOOLS[@]}"
}

# The Debian mirror this host already uses (deb822 "URIs:" or one-line "deb URL suite"); the
# security archive is skipped because it carries no base system. DEBIAN_MIRROR overrides.
zoo_debian_mirror() {
    if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
    local url
    url=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | sed -n -e 's/^URIs:[[:space:]]*//p' -e 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p' \
        | tr ' ' '\n' | grep -E '/debian/?$' | grep -v security | head -n1)
    echo "${url:-http://deb.debian.org/debian}"
}

zoo_podman_env() {
    local work=$1
    mkdir -p "$work/storage" "$work/run" "$work/cni" "$work/tmp"
    cat >"$work/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[network]
network_config_dir = "$work/cni"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$work/events.log"
tmp_dir = "$work/tmp"
EOF
    cat >"$work/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$work/storage"
runroot = "$work/run"
EOF
    export CONTAINERS_CONF="$work/containers.conf" CONTAINERS_STORAGE_CONF="$work/storage.conf"
    export ZOO_PODMAN_WORK="$work"
    # buildah writes its layers to TMPDIR; keep them in the throwaway folder too.
    export TMPDIR="$work/tmp"
}

# debootstrap --variant=minbase takes about a minute; its trimmed rootfs is cached as a tarball
# (about 150 MB) so later runs only `podman import` it (a few seconds).
zoo_base_tarball() {
    local work=$1 tarball="$ZOO_CACHE_DIR/debian-py-$ZOO_SUITE.tar"
    if [ -s "$tarball" ]; then echo "$tarball"; return 0; fi
    local mirror rootfs="$work/rootfs"
    mirror=$(zoo_debian_mirror)
    zoo_log "debootstrap $ZOO_SUITE from $mirror (cached afterwards in $tarball)"
    mkdir -p "$ZOO_CACHE_DIR"
    zoo_as_root debootstrap --variant=minbase \
        --include=python3,python3-venv,python3-pip,ca-certificates \
        "$ZOO_SUITE" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
        tail -n 20 "$work/debootstrap.log" >&2
        zoo_log "debootstrap from $mirror failed (log above); set DEBIAN_MIRROR to a reachable mirror"
        return 1
    }
    # Package caches, apt lists, man pages and translations are not needed at run time (about 150 MB).
    zoo_as_root rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
    zoo_as_root find "$rootfs/usr/share/doc" -type f ! -name copyright -delete
    zoo_as_root tar -C "$rootfs" -cf "$tarball.part" . || return 1
    mv "$tarball.part" "$tarball"
    zoo_as_root rm -rf "$rootfs"
    echo "$tarball"
}

# ENV in the base image rather than in the bento, so the bento stays the one users build with Docker:
# Debian's pip refuses to install uv into the system Python without PIP_BREAK_SYSTEM_PACKAGES, and
# uv ignores the system CA store (the one mounted into the build) without UV_NATIVE_TLS.
zoo_base_image() {
    local image=$1 work=$2 tarball
    if podman image exists "$image"; then return 0; fi
    tarball=$(zoo_base_tarball "$work") || return 1
    podman import --quiet \
        --change 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' \
        --change 'ENV UV_NATIVE_TLS=1' \
        --change 'CMD ["/bin/bash"]' \
        "$tarball" "$image" >/dev/null
}

zoo_podman_teardown() {
    [ -n "${ZOO_PODMAN_WORK:-}" ] || return 0
    podman rm --all --force --time 5 >/dev/null 2>&1 || true
    buildah rm --all >/dev/null 2>&1 || true
    podman rmi --all --force >/dev/null 2>&1 || true
    # Overlay layers can stay mounted after a killed build; unmount before the folder is removed.
    grep -o " $ZOO_PODMAN_WORK/[^ ]*" /proc/mounts 2>/dev/null | sort -r | while read -r mnt; do
        zoo_as_root umount -l "$mnt" 2>/dev/null || true
    done
    ZOO_PODMAN_WORK=""
}
