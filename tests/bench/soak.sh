#!/usr/bin/env bash
# Soak: many sandboxes at once, counting what a CI pipeline would feel.
#
#   tests/bench/soak.sh [LXC_RUNS [QEMU_RUNS]]     (defaults 1000 and 100)
#
# LXC_RUNS sandboxes of `echo N` on lxc:/// with 8 at a time, then
# QEMU_RUNS on qemu:///system with 4 at a time. Each run must print its own
# N and exit 0; one that has not ended after SOAK_BOUND seconds (default
# 300) is a hang, killed and counted. Then it lists what is left on the
# host: domains, state directories, libvirt's per-container files and
# logs of the soak's sandboxes. Prints one line per driver and exits 1 on
# any failure, hang or leftover. Run by make bench; runs alone as well.
set -euo pipefail
cd "$(dirname "$0")/../.."
lxc_runs=${1:-1000}
qemu_runs=${2:-100}
bound=${SOAK_BOUND:-300}
launcher=${BENCH_BIN:-bin}/virt-sandbox
work=$(mktemp -d /tmp/virt-sandbox-soak.XXXXXX)
trap 'rm -rf "$work"' EXIT
tag=soak$$

# one URI N: a single run, its verdict appended to $work/verdicts.
one() {
	local uri=$1 n=$2 out rc
	out=$(timeout -s KILL "$bound" "$launcher" -c "$uri" -n "sandbox-$tag-$n" /bin/echo "$n" 2>"$work/err-$n") && rc=0 || rc=$?
	if [ "$rc" -eq 137 ]; then
		echo "hang $n" >>"$work/verdicts"
	elif [ "$rc" -ne 0 ] || [ "$out" != "$n" ]; then
		echo "fail $n exit $rc: $(tail -n 1 "$work/err-$n")" >>"$work/verdicts"
	else
		echo "ok $n" >>"$work/verdicts"
	fi
	rm -f "$work/err-$n"
}
export -f one
export launcher bound tag work

status=0
soak() { # URI RUNS PARALLEL
	local uri=$1 runs=$2 par=$3 start
	: >"$work/verdicts"
	start=$EPOCHREALTIME
	seq 1 "$runs" | xargs -P "$par" -I{} bash -c 'one "$0" "$1"' "$uri" {}
	local ok fail hang
	ok=$(grep -c '^ok ' "$work/verdicts" || true)
	fail=$(grep -c '^fail ' "$work/verdicts" || true)
	hang=$(grep -c '^hang ' "$work/verdicts" || true)
	awk -v u="$uri" -v n="$runs" -v p="$par" -v a="$start" -v b="$EPOCHREALTIME" -v ok="$ok" -v f="$fail" -v h="$hang" 'BEGIN {
		printf "SOAK  %-16s %5d runs at -P %d: %6.2f sandboxes/s, %d ok, %d failed, %d hung\n", u, n, p, n / (b - a), ok, f, h
	}'
	{ grep -v '^ok ' "$work/verdicts" || true; } | head -n 5 | sed 's/^/      /'
	[ "$fail" -eq 0 ] && [ "$hang" -eq 0 ] || status=1
}
soak lxc:/// "$lxc_runs" 8
soak qemu:///system "$qemu_runs" 4

left=()
for uri in lxc:/// qemu:///system; do
	while read -r d; do [ -n "$d" ] && left+=("domain $d"); done < <(virsh -q -c "$uri" list --all --name | grep "sandbox-$tag-" || true)
done
for f in /run/virt-sandbox/sandbox-"$tag"-* /run/libvirt/lxc/sandbox-"$tag"-* \
	/var/log/libvirt/lxc/sandbox-"$tag"-* /var/log/libvirt/qemu/sandbox-"$tag"-*; do
	[ -e "$f" ] && left+=("$f")
done
if [ ${#left[@]} -eq 0 ]; then
	echo "SOAK  left behind: nothing"
else
	echo "SOAK  left behind: ${#left[@]}: ${left[*]:0:5}"
	status=1
fi
exit "$status"
