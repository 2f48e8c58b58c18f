#!/usr/bin/env bash
# A stand-in remote libvirt host on this machine, for the tests of remote
# URIs: a second libvirtd in a mount namespace of its own, with its own
# state (tmpfs over libvirt's run, lib, cache and log directories, a copy
# of /etc/libvirt without the first daemon's domains, networks and pools,
# its own pid file and sockets), listening on TCP loopback without
# authentication. The launcher's directories are hidden from it by tmpfs
# mounts: its state, cache and image store, the services' configs and
# logs, /tmp, /work and the home directories; so a sandbox that works
# through it refers to nothing of the launcher's filesystem. It still
# shares the kernel, /boot and /lib/modules, as an LXC host must.
#
# The first libvirtd (tests/setup-host.sh) is never touched.
#
#   remote-host.sh start [DIR...]
#                           idempotent; prints the URI's host part; DIRs
#                           are hidden too (the tests pass their checkout,
#                           which may live anywhere: CI clones elsewhere)
#   remote-host.sh stop
#   remote-host.sh pid      the daemon's namespace holder, for nsenter
set -euo pipefail

port=${VIRT_SANDBOX_REMOTE_PORT:-16519}
top=/run/virt-sandbox-remote-host
pidfile=$top/tini.pid

log() { printf 'remote-host: %s\n' "$*" >&2; }

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

# What the second daemon must not see: the launcher's files, and the first
# daemon's state.
hidden=(
	/run/libvirt /var/lib/libvirt /var/cache/libvirt /var/log/libvirt
	/run/virt-sandbox /var/cache/virt-sandbox /var/lib/virt-sandbox
	/etc/virt-sandbox /var/log/virt-sandbox
	/tmp /work /home /root
)

# etc is /etc/libvirt without what belongs to the first daemon: its
# domains, networks, pools and secrets. QEMU's output goes to files, so
# no virtlogd is needed.
make_etc() {
	rm -rf "$top/etc"
	cp -a /etc/libvirt "$top/etc"
	find "$top/etc/qemu" "$top/etc/lxc" "$top/etc/storage" "$top/etc/secrets" \
		-name '*.xml' -delete 2>/dev/null || true
	find "$top/etc" -path '*/autostart/*' -delete 2>/dev/null || true
	printf '\nstdio_handler = "file"\n' >>"$top/etc/qemu.conf"
	cat >"$top/libvirtd.conf" <<-EOF
		# The stand-in remote host: TCP on loopback only, no authentication.
		listen_tls = 0
		listen_tcp = 1
		listen_addr = "127.0.0.1"
		tcp_port = "$port"
		auth_tcp = "none"
		auth_unix_ro = "none"
		auth_unix_rw = "none"
	EOF
}

start() {
	hidden+=("$@")
	if running; then
		echo "127.0.0.1:$port"
		return
	fi
	mkdir -p "$top"
	make_etc
	# In the namespace: libvirt's hybrid-cgroup fix as setup-host.sh does
	# it, the hidden directories, the copied configuration.
	local script='
		set -e
		if [ "$(stat -f -c %T /sys/fs/cgroup)" = tmpfs ] && mountpoint -q /sys/fs/cgroup/unified; then
			umount /sys/fs/cgroup/unified
		fi
		for d in "$@"; do
			[ -d "$d" ] && mount -t tmpfs -o mode=0755 remote-host "$d"
		done
		chmod 1777 /tmp
		mkdir -p /var/lib/libvirt/images /var/log/libvirt/qemu /var/log/libvirt/lxc
		mount --bind '"$top"'/etc /etc/libvirt
		exec tini -s -- libvirtd --listen -f '"$top"'/libvirtd.conf -p /run/libvirt/libvirtd.pid
	'
	setsid unshare -m --propagation private sh -c "$script" sh "${hidden[@]}" \
		</dev/null >>"$top/libvirtd.log" 2>&1 &
	echo $! >"$pidfile"
	for _ in $(seq 1 100); do
		virsh -c "qemu+tcp://127.0.0.1:$port/system" version >/dev/null 2>&1 && break
		running || break
		sleep 0.1
	done
	if ! virsh -c "qemu+tcp://127.0.0.1:$port/system" version >/dev/null 2>&1; then
		log "the second libvirtd does not answer on 127.0.0.1:$port; its log:"
		tail -20 "$top/libvirtd.log" >&2
		stop
		exit 1
	fi
	echo "127.0.0.1:$port"
}

stop() {
	if running; then
		local pid
		pid=$(cat "$pidfile")
		kill "$pid"
		for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
	fi
	rm -rf "$top"
}

case "${1:-}" in
start)
	shift
	start "$@"
	;;
stop) stop ;;
pid) running && cat "$pidfile" ;;
*)
	echo "usage: $0 start|stop|pid" >&2
	exit 2
	;;
esac
