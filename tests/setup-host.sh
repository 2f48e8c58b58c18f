#!/usr/bin/env bash
# Prepares this host for virt-sandbox and its tests: installs the Debian packages,
# starts virtlogd and libvirtd when they are not running, and waits until
# lxc:/// and qemu:///system answer. Idempotent, and quick when all is in place.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

packages=(
	libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-daemon-driver-lxc
	libvirt-clients libvirt-dev pkg-config
	# qemu-system-common: /usr/lib/qemu/virtiofsd, for virtiofs shares.
	qemu-system-x86 qemu-system-common qemu-utils linux-image-amd64
	busybox-static bubblewrap hyperfine tmux e2fsprogs tini python3
	squashfs-tools dnsmasq-base
	docker-registry skopeo umoci systemd man-db
)

log() { printf 'setup-host: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
	log "must run as root (it installs packages and starts libvirtd)"
	exit 1
fi

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	log "installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# An unprivileged caller for the tests that tell the caller's identity from
# root's; the libvirt group lets it reach libvirtd.
if ! id sandbox-test >/dev/null 2>&1; then
	log "adding user sandbox-test"
	useradd --create-home --groups libvirt --shell /bin/sh sandbox-test
fi

# A caller with no rights at all, for qemu:///session: not in group libvirt
# (it cannot reach libvirtd's sockets) nor kvm (its QEMU runs under TCG, as
# on any host without KVM), so the tests show what a plain user gets.
if ! id sandbox-user >/dev/null 2>&1; then
	log "adding user sandbox-user"
	useradd --create-home --shell /bin/sh sandbox-user
fi

# A range of ids for the user namespaces of LXC sandboxes (--userns on,
# the default with -p and for images) of callers without a range of their
# own in /etc/subuid and /etc/subgid, root among them: above what useradd
# hands out (SUB_UID_MAX 600100000), so no user's range overlaps it.
for f in /etc/subuid /etc/subgid; do
	grep -q '^virt-sandbox:' "$f" 2>/dev/null || echo 'virt-sandbox:700000000:65536' >>"$f"
done

# qemu:///system sandboxes run QEMU as their caller, which must be able to
# reach its domain's files under /var/lib/libvirt/qemu: upstream libvirt
# packages that directory 0751, Debian 0750.
chmod o+x /var/lib/libvirt/qemu

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if ! running /run/virtlogd.pid; then
	log "starting virtlogd"
	virtlogd -d
fi

# A libvirtd started otherwise (without our configuration, which lets the
# test user in, or without the reaper below) is restarted.
parent_of() { ps -o comm= -p "$(ps -o ppid= -p "$1" | tr -d ' ')" 2>/dev/null; }
if running /run/libvirtd.pid &&
	{ [ "$(stat -c %a:%G /run/libvirt/libvirt-sock 2>/dev/null)" != 770:libvirt ] ||
		[ "$(parent_of "$(cat /run/libvirtd.pid)")" != tini ]; }; then
	log "restarting libvirtd with $here/libvirtd.conf under tini"
	kill "$(cat /run/libvirtd.pid)"
	for _ in $(seq 1 100); do running /run/libvirtd.pid || break; sleep 0.1; done
fi

# libvirtd runs under tini as a child subreaper: the QEMU and LXC processes
# it double-forks are then reaped at once when they exit. Orphans otherwise
# go to PID 1, which on some hosts reaps only every second or two, and
# libvirt waits for the zombie to go before it reports a domain stopped.
start_libvirtd() {
	setsid "$@" tini -s -- libvirtd -f "$here/libvirtd.conf" \
		</dev/null >>/var/log/libvirt/libvirtd-stdio.log 2>&1 &
}

if ! running /run/libvirtd.pid; then
	mkdir -p /var/log/libvirt
	# On hosts with hybrid cgroups (v1 controllers plus a cgroup2 mount at
	# /sys/fs/cgroup/unified) libvirt's LXC driver fails to create its
	# cgroup directories. libvirtd then runs in a private mount namespace
	# where that mount is absent, which leaves the host's mounts alone.
	if [ "$(stat -f -c %T /sys/fs/cgroup 2>/dev/null)" = tmpfs ] &&
		mountpoint -q /sys/fs/cgroup/unified 2>/dev/null; then
		log "starting libvirtd (hybrid cgroups: private mount namespace without /sys/fs/cgroup/unified)"
		start_libvirtd unshare -m --propagation private sh -c 'umount /sys/fs/cgroup/unified && exec "$@"' sh
	else
		log "starting libvirtd"
		start_libvirtd
	fi
fi

for uri in lxc:/// qemu:///system; do
	for _ in $(seq 1 100); do
		virsh -c "$uri" version >/dev/null 2>&1 && break
		sleep 0.1
	done
	virsh -c "$uri" version >/dev/null 2>&1 || { log "$uri does not answer"; exit 1; }
done
