#!/usr/bin/env bash
# Build the reference worker's container image (localhost/thaw/torchlike) with no registry.
#
# No registry is reachable from these nodes and debootstrap takes minutes, so the image is a
# minimal root filesystem assembled from this machine's own Python: the interpreter, its
# standard library (without tests, tkinter, idle, site-packages), the shared libraries that it
# and its extension modules link against (found with ldd), and examples/torchlike/worker.py.
# `podman import` turns that directory into a one-layer image in a few seconds (~60 MB).
#
# The model weights are NOT in the image: the container runtime bind-mounts the node's model
# cache at the same path, so the weights are mapped from the host page cache and stay out of
# every checkpoint.
#
# Usage: sudo infra/build-worker-image.sh [PYTHON]   (default: the project's .venv python)
# Idempotent: the tag is derived from the worker source and the interpreter, so a second run
# with nothing changed only checks that the image exists. Prints the image name on stdout.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${1:-$REPO/.venv/bin/python}"
NAME=localhost/thaw/torchlike
WORKER="$REPO/examples/torchlike/worker.py"

step() { printf '[build-worker-image] %s\n' "$*" >&2; }
die() { printf '[build-worker-image] error: %s\n' "$*" >&2; exit 1; }

command -v podman >/dev/null || die "podman missing: run sudo infra/install-podman.sh"
[ -x "$PYTHON" ] || die "no python at $PYTHON (create the venv or pass one)"

read -r PREFIX PYVER < <("$PYTHON" -c 'import sys; print(sys.base_prefix, "%d.%d" % sys.version_info[:2])')
PYBIN="$(readlink -f "$PREFIX/bin/python$PYVER")"
tag="$( (sha256sum "$WORKER" "$0" "$PYBIN" | cut -d' ' -f1; echo "$PREFIX $PYVER") | sha256sum | cut -c1-12)"
if podman image exists "$NAME:$tag"; then
  podman tag "$NAME:$tag" "$NAME:latest"
  step "ok: $NAME:$tag exists (nothing to do)"
  echo "$NAME:$tag"
  exit 0
fi

root="$(mktemp -d /tmp/thaw-rootfs.XXXXXX)"
trap 'rm -rf "$root"' EXIT
step "assembling a root filesystem from python $PYVER at $PREFIX"
mkdir -p "$root"/{opt/python/bin,opt/python/lib,app,tmp,models,etc,dev,proc,sys}
chmod 1777 "$root/tmp"
cp "$PYBIN" "$root/opt/python/bin/python3"
stdlib="$PREFIX/lib/python$PYVER"
tar -C "$PREFIX/lib" \
  --exclude="python$PYVER/site-packages" --exclude="python$PYVER/dist-packages" \
  --exclude="python$PYVER/test" --exclude="python$PYVER/idlelib" --exclude="python$PYVER/tkinter" \
  --exclude="python$PYVER/turtledemo" --exclude="python$PYVER/ensurepip" \
  --exclude="python$PYVER/lib2to3" --exclude="python$PYVER/config-*" --exclude='_tkinter*' \
  -cf - "python$PYVER" | tar -C "$root/opt/python/lib" -xf -
mkdir -p "$root/opt/python/lib/python$PYVER/site-packages"

# Shared libraries of the interpreter and of every kept extension module, at their host paths
# (libpython too, so the interpreter's rpath or the default search path finds it).
libs="$( { ldd "$PYBIN"; find "$root/opt/python/lib/python$PYVER/lib-dynload" -name '*.so' -exec ldd {} \; ; } 2>/dev/null \
  | awk '/=> \// {print $3} /^\t\/lib/ {print $1}' | sort -u)"
for lib in $libs; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
for lib in $libs; do  # the loader also looks in the multiarch dir; put libpython there too
  case "$lib" in */libpython*) mkdir -p "$root/lib/x86_64-linux-gnu"; cp -L "$lib" "$root/lib/x86_64-linux-gnu/";; esac
done
mkdir -p "$root/lib64"
cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
cp "$WORKER" "$root/app/worker.py"

step "importing into podman as $NAME:$tag"
tar -C "$root" -cf - . | podman import \
  --change 'ENV PYTHONDONTWRITEBYTECODE=1' \
  --change 'ENV THAW_BIND=0.0.0.0' \
  --change 'ENV THAW_MODEL_DIR=/models' \
  --change 'WORKDIR /app' \
  --change 'CMD ["/opt/python/bin/python3", "/app/worker.py"]' \
  - "$NAME:$tag" >/dev/null
podman tag "$NAME:$tag" "$NAME:latest"
step "ok: $NAME:$tag ($(podman image inspect "$NAME:$tag" --format '{{.Size}}') bytes)"
echo "$NAME:$tag"
