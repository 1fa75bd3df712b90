#!/usr/bin/env bash
# Install a working CRIU 4.x for Thaw's snapshotter (Debian bookworm, run as root).
#
# Why not `apt-get install criu`: bookworm ships CRIU 3.17.1, which fails `criu check` on recent
# kernels (vDSO layout error, fixed upstream in 4.x). Debian sid carries 4.x, so we fetch sid's
# *source* package and build only the `criu` binary from it (no dpkg-buildpackage: that would
# also build docs, python bindings and run the test suite, minutes instead of ~30 s).
#
# The sid source index goes into a private apt state directory (THAW_CRIU_WORK), so the system's
# apt sources are left exactly as they were. The binary goes to $THAW_CRIU_PREFIX/sbin/criu
# (default /usr/local/sbin, which is on root's PATH ahead of /usr/sbin and is where runc and
# podman look for `criu`).
#
# Idempotent: if the installed binary is 4.x and `criu check` passes, it exits at once.
# Environment: THAW_CRIU_PREFIX (default /usr/local), THAW_CRIU_WORK (default /var/cache/thaw-criu),
#              THAW_CRIU_FORCE=1 to rebuild anyway.
set -euo pipefail

PREFIX="${THAW_CRIU_PREFIX:-/usr/local}"
WORK="${THAW_CRIU_WORK:-/var/cache/thaw-criu}"
BIN="$PREFIX/sbin/criu"
MIN_MAJOR=4
# CRIU caches what it learns about the kernel (~60 ms of probing per run) in $KDAT_DIR, but only
# on tmpfs. /run is not tmpfs on these VMs, so the binary is built to use a root-only tmpfs of
# its own, mounted here on every run of this script (after a reboot CRIU works without it,
# only slower, until the script runs again).
KDAT_DIR=/run/criu

step() { printf '[install-criu] %s\n' "$*" >&2; }
. "$(dirname "$0")/apt-packages.sh"
die() { printf '[install-criu] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (CRIU needs root to build-install and to run)"

criu_ok() {
  # True when $BIN exists, is at least MIN_MAJOR.x, and this kernel passes `criu check`.
  [ -x "$BIN" ] || return 1
  local major
  major="$("$BIN" --version 2>/dev/null | sed -n 's/^Version: \([0-9]*\)\..*/\1/p')"
  [ -n "$major" ] && [ "$major" -ge "$MIN_MAJOR" ] || return 1
  grep -q "$KDAT_DIR/criu.kdat" "$BIN" || return 1
  "$BIN" check >/dev/null 2>&1
}

mount_kdat_tmpfs() {
  mkdir -p "$KDAT_DIR"
  mountpoint -q "$KDAT_DIR" || mount -t tmpfs -o size=4m,mode=0700 tmpfs "$KDAT_DIR"
}
mount_kdat_tmpfs

if [ "${THAW_CRIU_FORCE:-0}" != 1 ] && criu_ok; then
  step "ok: $("$BIN" --version | head -1) at $BIN passes 'criu check' (nothing to do)"
  exit 0
fi

# Build dependencies, from bookworm. iptables: CRIU locks the network with it while dumping
# established TCP connections (--tcp-established).
BUILD_DEPS=(
  build-essential pkg-config dpkg-dev
  libprotobuf-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler python3-protobuf
  libnl-3-dev libnet1-dev libcap-dev libbsd-dev libaio-dev libgnutls28-dev uuid-dev
  libnftables-dev iptables
)
install_missing_packages "${BUILD_DEPS[@]}"

# Fetch sid's criu source package through a private apt configuration: only a deb-src line,
# own lists and cache, so nothing about the system's apt setup changes.
mkdir -p "$WORK/apt/lists/partial" "$WORK/apt/archives/partial" "$WORK/src"
# The Debian mirror this machine's apt already uses (one-line or deb822 sources), so the script
# reaches exactly the registry the machine is set up for.
mirror_uri() {
  { grep -hE '^deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
      | sed -E 's/\[[^]]*\]//' | awk '{print $2}'
    grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}'
  } | grep -vE 'security|updates' | grep -E '/debian/?$' | head -1
}
MIRROR="$(mirror_uri)"
[ -n "$MIRROR" ] || die "no Debian mirror found in /etc/apt/sources.list*; add your bookworm sources first"
echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR sid main" >"$WORK/apt/sources.list"
APT_OPTS=(
  -o "Dir::Etc::SourceList=$WORK/apt/sources.list"
  -o "Dir::Etc::SourceParts=-"
  -o "Dir::State::Lists=$WORK/apt/lists"
  -o "Dir::Cache::Archives=$WORK/apt/archives"
  -o "APT::Get::List-Cleanup=0"
)
srcdir="$(find "$WORK/src" -maxdepth 1 -type d -name 'criu-[0-9]*' | sort -V | tail -1)"
if [ -z "$srcdir" ]; then
  step "fetching the criu source package from Debian sid"
  apt-get "${APT_OPTS[@]}" update -qq
  # Download file by file, checking each SHA-256 from the signed index, instead of
  # `apt-get source`: some mirrors lack the small debian.tar.xz, and the upstream orig tarball
  # alone builds the binary fine (Debian's patches only touch packaging and tests).
  orig=""
  while read -r uri name _size sum; do
    uri="${uri//\'/}"
    if curl -fsL --retry 3 -o "$WORK/src/$name" "$uri" \
        && echo "${sum#SHA256:}  $WORK/src/$name" | sha256sum -c --quiet -; then
      case "$name" in *.orig.tar.*) orig="$WORK/src/$name" ;; esac
    else
      rm -f "$WORK/src/$name"
      case "$name" in
        *.orig.tar.*) die "could not fetch or verify $uri" ;;
        *) step "note: $name unavailable from the mirror; building from the upstream tarball" ;;
      esac
    fi
  done < <(apt-get "${APT_OPTS[@]}" source --print-uris -qq criu | grep "^'")
  dsc="$(find "$WORK/src" -maxdepth 1 -name 'criu_*.dsc' | head -1)"
  if [ -n "$dsc" ] && ls "$WORK/src"/criu_*.debian.tar.* >/dev/null 2>&1; then
    (cd "$WORK/src" && dpkg-source -q -x "$dsc" >/dev/null)
  else
    ver="$(basename "$orig" | sed 's/^criu_\(.*\)\.orig\.tar\..*/\1/')"
    mkdir -p "$WORK/src/criu-$ver"
    tar -xf "$orig" -C "$WORK/src/criu-$ver" --strip-components=1
  fi
  srcdir="$(find "$WORK/src" -maxdepth 1 -type d -name 'criu-[0-9]*' | sort -V | tail -1)"
  [ -n "$srcdir" ] || die "no criu-* source directory in $WORK/src after fetching"
fi
step "building $(basename "$srcdir") (only the criu binary)"

# No -Werror: newer compilers than upstream tested with add warnings, never errors that matter.
start=$(date +%s)
rm -f "$srcdir/criu/kerndat.o"  # RUNDIR is compiled into it; make does not track flags
make -C "$srcdir" -j"$(nproc)" WERROR=0 RUNDIR="$KDAT_DIR" criu >"$WORK/build.log" 2>&1 \
  || { tail -30 "$WORK/build.log" >&2; die "build failed; full log in $WORK/build.log"; }
step "built in $(( $(date +%s) - start )) s"

install -D -m 0755 "$srcdir/criu/criu" "$BIN"
step "installed $BIN: $("$BIN" --version | head -1)"

if ! "$BIN" check; then
  die "'$BIN check' fails on this kernel ($(uname -r)); see the output above"
fi
step "ok: 'criu check' passes"
