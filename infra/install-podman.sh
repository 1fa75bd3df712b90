#!/usr/bin/env bash
# Install Podman for Thaw's container runtime (Debian bookworm, run as root).
#
# What this node needs and why:
# - podman 4.3 (bookworm) with runc, not crun: crun fails in this VM's cgroup-v1 layout and has
#   no checkpoint support; runc checkpoints through CRIU (install-criu.sh provides CRIU 4.x in
#   /usr/local/sbin, ahead of /usr/sbin on PATH, so runc finds it).
# - netavark + iptables: each container gets its own network namespace and published port, so two
#   restored copies of one checkpoint can listen on "the same" port side by side.
# - default ulimits no higher than this machine's hard limits, or every `podman run` fails.
# - cgroupfs and a file events logger: there is no systemd here.
# - /etc/criu/runc.conf with `tcp-close`: runc hands this file to CRIU on every checkpoint and
#   restore. A warm worker usually holds keep-alive connections from the gateway when it is
#   checkpointed; podman 4.3 has no --tcp-close, and without it CRIU refuses to restore a
#   "Connected TCP socket in image". Restored copies get those connections closed instead (their
#   peers are gone), the same as the process runtime's `criu restore --tcp-close`.
#   And `skip-in-flight`: a connection the worker has not accepted yet (a probe or a call that
#   arrived during the checkpoint) otherwise fails the whole checkpoint ("In-flight connection");
#   it is left out of the image instead, as the process runtime's `criu dump --skip-in-flight`.
#
# Settings go to /etc/containers/containers.conf.d/50-thaw.conf (a drop-in: the rest of the
# system's containers.conf is left alone). Idempotent; a second run only re-checks.
set -euo pipefail

step() { printf '[install-podman] %s\n' "$*" >&2; }
. "$(dirname "$0")/apt-packages.sh"
die() { printf '[install-podman] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (rootful podman is what checkpoint/restore needs)"

PKGS=(podman runc conmon catatonit netavark aardvark-dns iptables golang-github-containers-common)
install_missing_packages "${PKGS[@]}"

nofile_hard="$(ulimit -Hn)"
nproc_hard="$(ulimit -Hu)"
# Observed on the Firecracker VMs: runc refuses an nproc limit above kernel.pid_max (32768)
# even when the hard limit is higher, so cap it there.
pid_max="$(cat /proc/sys/kernel/pid_max)"
[ "$nproc_hard" = unlimited ] || [ "$nproc_hard" -gt "$pid_max" ] && nproc_hard="$pid_max"
conf_dir=/etc/containers/containers.conf.d
conf="$conf_dir/50-thaw.conf"
want="$(cat <<EOF
# Written by Thaw's infra/install-podman.sh; rerun it rather than editing by hand.
[containers]
default_ulimits = ["nofile=${nofile_hard}:${nofile_hard}", "nproc=${nproc_hard}:${nproc_hard}"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[network]
network_backend = "netavark"
EOF
)"
if [ ! -f "$conf" ] || [ "$(cat "$conf")" != "$want" ]; then
  step "writing $conf"
  mkdir -p "$conf_dir"
  printf '%s\n' "$want" >"$conf"
fi

criu_conf=/etc/criu/runc.conf
for option in tcp-close skip-in-flight; do
  if ! grep -qx "$option" "$criu_conf" 2>/dev/null; then
    step "adding $option to $criu_conf"
    mkdir -p /etc/criu
    printf '%s\n' "$option" >>"$criu_conf"
  fi
done

runtime="$(podman info --format '{{.Host.OCIRuntime.Name}}' 2>/dev/null)" \
  || die "'podman info' fails; run it by hand to see why"
[ "$runtime" = runc ] || die "podman uses OCI runtime '$runtime', expected runc (see $conf)"
criu_path="$(command -v criu || true)"
[ -n "$criu_path" ] || step "warning: no criu on PATH; run infra/install-criu.sh for checkpoint/restore"
step "ok: $(podman --version), runtime runc, criu ${criu_path:-missing}"
