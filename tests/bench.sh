#!/usr/bin/env bash
# Benchmarks virt-sandbox against the lower bounds it can be held to, and
# prints medians and ratios as a table. Run by `make bench` from the repo
# root after the build; needs hyperfine, bwrap, qemu-system-x86_64 and
# python3, skopeo and umoci, and a running libvirtd (tests/setup-host.sh).
#
#   LXC   bin/virt-sandbox -c lxc:/// /bin/true, beside
#           rawlxc  the same job done raw through the same libvirt Go API
#                   (tests/bench/rawlxc): a transient LXC domain whose init is
#                   /bin/true on the host's / read-only, awaited by lifecycle
#                   events. What libvirt itself costs; target ours <= 1.3x.
#           bwrap   bwrap --ro-bind / / /bin/true: namespaces with no daemon
#                   at all, for scale.
#         and -p (a user namespace) against -p --userns off: what the user
#           namespace costs.
#   QEMU  bin/virt-sandbox -c qemu:///system /bin/true, restored from a
#         template, and the same with --cold-boot, beside
#           plain   qemu-system-x86_64 run by hand booting the same kernel
#                   with an init that powers off at once (tests/bench/poweroff):
#                   what booting the kernel costs; target from a template
#                   <= 0.3x (aim 0.15x), cold <= 1.25x.
#         and -c qemu:///session as sandbox-user (no group, no KVM; made by
#           setup-host.sh) against qemu:///system: what rootless costs.
#   template  one QEMU sandbox with the template cache emptied: the
#           launcher's report of building the template (a cold boot to the
#           init's wait for its run, and the save).
#   initrd  one QEMU sandbox with the initrd cache emptied, then one more,
#           printing the launcher's own report of building / finding it.
#   FLATTEN tests/bench/flatten.sh (which runs alone too): the image store's
#           cold RootFS of a ~200 MB docker-archive of random files in 4
#           layers (tests/bench/flatten), against skopeo copy to an OCI
#           layout plus umoci unpack --rootless of the same archive, timed
#           together; target ours <= 1.0x.
#   FILES   reading 1 GiB, a stat of every file under /usr (BENCH_FILES_WALK)
#           and reading 2000 small files on the host, and in QEMU sandboxes
#           over 9p and over virtiofs (tests/bench/files.sh, timed on the
#           host as the guest's lines arrive), through the root share and a
#           read-only host-bind mount; and the same work on the guest's tmpfs
#           (copied there first: no transport at all), the ceiling the
#           accelerator sets for any transport. Targets for the 9p root (the
#           default): read <= 5x the host, walk <= 3x.
#   STDIO   bytes through a sandbox's stdout and stdin (1 GiB on LXC, 256 MiB
#           on QEMU), against the same bytes through a local pipe; the
#           sandbox's start (a run of /bin/true, whose time is shown) is
#           taken off its time. Targets: LXC >= 0.5x a pipe's speed (0.9x
#           with the caller's descriptors handed over); QEMU >= 370 MB/s, 10x
#           the frames through libvirtd it replaced (37 MB/s), which under
#           TCG is above what a virtio-serial port moves (see DESIGN.md).
#           With BENCH_STDIO_OLD set to another build's virt-sandbox (one
#           from before the data ports: the channel path), QEMU's row is
#           measured with it too, in the same turns, and the ratio shown.
#   SOAK    tests/bench/soak.sh (which runs alone too): BENCH_SOAK_LXC runs at
#           -P 8 and BENCH_SOAK_QEMU at -P 4, counting failures, hangs and
#           what is left on the host; target zero of each.
#
# Environment: BENCH_FILES_WALK (default /usr: the tree FILES stats),
# BENCH_SOAK_LXC (default 1000), BENCH_SOAK_QEMU (default 100),
# BENCH_LXC_RUNS (default 20), BENCH_QEMU_RUNS (default 10),
# BENCH_FLATTEN_RUNS (default 3), BENCH_FILES_RUNS (default 3), BENCH_FLATTEN_MB (default 200),
# BENCH_STDIO_RUNS (default 3), BENCH_STDIO_OLD (default none),
# BENCH_QEMU_ACCEL (default tcg: the accelerator of the plain boot, which
# should be the one the launcher picks on this host), BENCH_BIN (default bin:
# where virt-sandbox is), GO (default go).
set -euo pipefail

cd "$(dirname "$0")/.."
GO=${GO:-go}
lxc_runs=${BENCH_LXC_RUNS:-20}
qemu_runs=${BENCH_QEMU_RUNS:-10}
stdio_runs=${BENCH_STDIO_RUNS:-3}
qemu_accel=${BENCH_QEMU_ACCEL:-tcg}
launcher=${BENCH_BIN:-bin}/virt-sandbox

for c in hyperfine bwrap qemu-system-x86_64 python3 skopeo umoci "$GO"; do
	command -v "$c" >/dev/null || { echo "bench: $c not found" >&2; exit 1; }
done
[ -x "$launcher" ] || { echo "bench: $launcher missing: run make build" >&2; exit 1; }

work=$(mktemp -d /tmp/virt-sandbox-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
log() { printf 'bench: %s\n' "$*" >&2; }

# The baselines.
log "building the baselines"
"$GO" build -o "$work/rawlxc" ./tests/bench/rawlxc
CGO_ENABLED=0 "$GO" build -trimpath -ldflags '-s -w' -o "$work/poweroff" ./tests/bench/poweroff
"$work/poweroff" -cpio "$work/poweroff.cpio"
kernel=$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)
[ -n "$kernel" ] || { echo "bench: no /boot/vmlinuz-*" >&2; exit 1; }

failed=0
declare -A median stddev runs fails

# failed NAME WHY: marks NAME failed, showing the end of its output.
failed() {
	log "$1 FAILED$2:"
	tail -n 5 "$work/out" | sed 's/^/    /' >&2
	median[$1]=FAILED
	failed=1
}

# measure NAME RUNS WARMUP CMD...: runs CMD once to see that it works, then
# under hyperfine, and keeps the median and standard deviation of its
# successful runs and how many runs failed. Failed runs are left out rather
# than ending the measurement: libvirt now and then loses a domain's exit.
measure() {
	local name=$1 n=$2 warmup=$3
	shift 3
	log "measuring $name: $*"
	if ! "$@" >"$work/out" 2>&1; then
		failed "$name" ""
		return 0
	fi
	hyperfine -N -i --style none --runs "$n" --warmup "$warmup" \
		--export-json "$work/$name.json" "$(printf '%q ' "$@")" >/dev/null
	read -r "median[$name]" "stddev[$name]" "runs[$name]" "fails[$name]" < <(python3 -c '
import json, statistics, sys
r = json.load(open(sys.argv[1]))["results"][0]
ok = [t for t, c in zip(r["times"], r["exit_codes"]) if c == 0]
fails = len(r["times"]) - len(ok)
if not ok:
    print("FAILED 0 0", fails)
else:
    print(statistics.median(ok), statistics.stdev(ok) if len(ok) > 1 else 0, len(ok), fails)
' "$work/$name.json")
	if [ "${median[$name]}" = FAILED ]; then
		# hyperfine keeps no stderr: one more run may show what went wrong.
		"$@" >"$work/out" 2>&1 || true
		failed "$name" " in every run under hyperfine (one more run says)"
	elif [ "${fails[$name]}" -gt 0 ]; then
		log "$name: ${fails[$name]} of $n runs failed, left out (the table says so)"
	fi
}

measure lxc    "$lxc_runs" 2 "$launcher" -c lxc:/// /bin/true
measure rawlxc "$lxc_runs" 2 "$work/rawlxc"
# -p on LXC runs in a user namespace; --userns off is what it costs.
measure lxcp       "$lxc_runs" 2 "$launcher" -c lxc:/// -p /bin/true
measure lxcpnouns  "$lxc_runs" 2 "$launcher" -c lxc:/// -p --userns off /bin/true
# bwrap takes milliseconds: many more runs cost nothing.
measure bwrap  $((lxc_runs * 10)) 5 bwrap --ro-bind / / /bin/true
measure qemu   "$qemu_runs" 1 "$launcher" -c qemu:///system /bin/true
measure qemucold "$qemu_runs" 1 "$launcher" -c qemu:///system --cold-boot /bin/true
# Rootless: the user's own session libvirtd (started by the first run) and
# caches. Only where that user can reach the launcher (not a tree in /root).
session_user=sandbox-user
if [ "$(id -u)" -eq 0 ] && id "$session_user" >/dev/null 2>&1 &&
	runuser -u "$session_user" -- test -x "$launcher"; then
	measure session "$qemu_runs" 1 runuser -u "$session_user" -- env -i PATH="$PATH" \
		HOME="$(getent passwd "$session_user" | cut -d: -f6)" "$launcher" -c qemu:///session /bin/true
else
	log "not measuring qemu:///session: needs root, $session_user and a launcher it can run"
	median[session]=FAILED
fi
measure plain  "$qemu_runs" 1 qemu-system-x86_64 -accel "$qemu_accel" -m 512 \
	-nodefaults -display none -no-reboot -serial none \
	-kernel "$kernel" -initrd "$work/poweroff.cpio" \
	-append 'console=ttyS0 quiet panic=-1 rdinit=/init'

# The initrd, cold then cached, and the template. The cache is where the
# launcher keeps them.
if [ "$(id -u)" -eq 0 ]; then
	cache=/var/cache/virt-sandbox
else
	cache=${XDG_CACHE_HOME:-$HOME/.cache}/virt-sandbox
fi
initrd_cache=$cache/initrd
# debug_step PATTERN: a -d run of /bin/true on QEMU; sets step_line to the
# first line of its output matching PATTERN and the run's wall time, or to
# why there is none (and failed).
debug_step() {
	local start=$EPOCHREALTIME rc=0 wall
	"$launcher" -d -c qemu:///system /bin/true >"$work/out" 2>&1 || rc=$?
	wall=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f s", b - a }')
	step_line=$(grep -E "$1" "$work/out" | head -n 1 || true)
	[ -n "$step_line" ] || { step_line="no line matching '$1' in -d output; last: $(tail -n 1 "$work/out")"; failed=1; }
	[ "$rc" -eq 0 ] || { step_line="$step_line (exit $rc)"; failed=1; }
	step_line="$step_line  [whole run $wall]"
}
initrd_lines=()
for pass in cold cached; do
	[ "$pass" = cold ] && rm -rf "$initrd_cache"
	log "initrd $pass"
	debug_step 'virt-sandbox: initrd (built|cached)'
	initrd_lines+=("$(printf '%-7s %s' "$pass" "$step_line")")
done

log "template build"
rm -rf "$cache/template"
debug_step 'virt-sandbox: template .* built in'
template_line=$step_line

# File access: tests/bench/files.sh reads a 1 GiB file, 2000 files of
# 4 KiB and (through the root only) stats every file under /usr, on the host
# and in QEMU sandboxes over 9p and over virtiofs, each through the root
# share (the host's / read-only) and through a read-only host-bind mount,
# and on a guest tmpfs they were copied to (with the tree's shape: its
# directories and empty files). Medians of BENCH_FILES_RUNS runs, all from
# the host's page cache.
files=$(mktemp -d /var/tmp/virt-sandbox-bench-files.XXXXXX)
trap 'rm -rf "$work" "$files"' EXIT
head -c 1073741824 /dev/urandom >"$files/1g"
mkdir "$files/small"
for i in $(seq 2000); do head -c 4096 /dev/urandom >"$files/small/$i"; done
cat "$files/1g" "$files/small"/* >/dev/null
files_runs=${BENCH_FILES_RUNS:-3}
log "file access on the host, over 9p and virtiofs and on a guest tmpfs ($files_runs runs each)"
walk_tree=${BENCH_FILES_WALK:-/usr}
files_on() { # LABEL [SANDBOX OPTIONS...]: "LABEL NAME SECONDS" per run
	local label=$1 dir=$files tree=$walk_tree copy=
	shift
	if [ "$#" -gt 0 ]; then
		case "$label" in
		*bind) dir=/bench tree= ;;
		tmpfs) copy=--tmpfs ;;
		esac
		"$launcher" -c qemu:///system --timeout 60m "$@" -- "$PWD/tests/bench/files.sh" $copy "$dir" "$files_runs" $tree
	else
		tests/bench/files.sh "$dir" "$files_runs" "$tree"
	fi 2>&1 | while IFS= read -r line; do
		# The host's clock, as each line arrives.
		case "$line" in
		"begin "*) start=$EPOCHREALTIME ;;
		"failed "*) echo "$label ${line#failed } FAILED" ;;
		"end "*) awk -v l="$label" -v n="${line#end }" -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%s %s %.3f\n", l, n, b - a }' ;;
		*) log "$label: $line" ;;
		esac
	done || true
}
{
	files_on host
	# 3 GiB: the guest's /tmp (half its memory) holds the 1 GiB file.
	files_on tmpfs --memory 3072
	for fs in 9p virtiofs; do
		files_on "$fs-root" --share-fs "$fs"
		files_on "$fs-bind" --share-fs "$fs" -m "host-bind:/bench=$files,ro"
	done
} >"$work/files"
files_table=$(python3 - "$work/files" "$walk_tree" <<'PY'
import statistics, sys
times = {}
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) == 3:
        times.setdefault((f[0], f[1]), []).append(f[2])
def median(where, what):
    t = times.get((where, what), [])
    if not t or "FAILED" in t:
        return None
    return statistics.median(float(x) for x in t)
targets = {("9p-root", "read"): 5.0, ("9p-root", "walk"): 3.0}
rows = [("read", "read 1 GiB"), ("walk", "stat of every file under " + sys.argv[2]), ("small", "read 2000 files of 4 KiB")]
failed = False
print("FILES (median s; x of the host; x of the same work on the guest's tmpfs, no transport)")
for what, label in rows:
    host = median("host", what)
    print(f"  {label:<40} host {host:.3f} s" if host else f"  {label:<40} host FAILED")
    tmpfs = median("tmpfs", what)
    for where in ["tmpfs", "9p-root", "9p-bind", "virtiofs-root", "virtiofs-bind"]:
        if what == "walk" and where.endswith("bind"):
            continue
        m = median(where, what)
        if m is None or not host:
            print(f"    {where:<38} FAILED")
            failed = True
            continue
        r = m / host
        line = f"    {where:<38} {m:8.3f} s  {r:6.1f}x"
        if where == "tmpfs":
            line += "   what the emulated CPU alone costs"
        elif tmpfs:
            line += f"  {m / tmpfs:5.1f}x tmpfs"
        t = targets.get((where, what))
        if t:
            line += f"   target <= {t:.0f}x: " + ("ok" if r <= t else "MISSED")
            if tmpfs and tmpfs / host > t:
                line += f" (tmpfs itself {tmpfs / host:.1f}x)"
        print(line)
sys.exit(1 if failed else 0)
PY
) || failed=1

# Throughput of LXC sandboxes: 16 one after another, then 16 with 4 at a time.
throughput() { # PARALLEL: sandboxes per second over 16 runs of /bin/true
	local start=$EPOCHREALTIME
	seq 16 | xargs -P "$1" -I{} "$launcher" -c lxc:/// /bin/true || { echo FAILED; return; }
	awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f sandboxes/s", 16 / (b - a) }'
}
log "throughput of 16 LXC sandboxes, sequential and -P 4"
tp_seq=$(throughput 1)
tp_par=$(throughput 4)

# Flattening an image: the image store against skopeo + umoci.
log "image flattening"
if ! GO="$GO" tests/bench/flatten.sh >"$work/flatten" 2>"$work/out"; then
	failed flatten ""
	echo "FLATTEN  FAILED" >"$work/flatten"
fi

# Stdio at pipe speed: seconds to move N bytes through a sandbox's stdout and
# stdin, less a run of /bin/true, against a local pipe. Each is the median of
# BENCH_STDIO_RUNS runs, taken in turns, so that a busy moment of the host
# weighs on all of them alike.
secs_of() { # CMD...: wall seconds of a shell pipeline
	local start=$EPOCHREALTIME
	bash -c "$*" >/dev/null 2>&1 || { echo FAILED; return; }
	awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }'
}
median_of() { # NUMBERS...: their median, or FAILED if any failed
	printf '%s\n' "$@" | sort -g | awk '/FAILED/ { f = 1 } { v[NR] = $1 } END {
		if (f) print "FAILED"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
stdio_line() { # LABEL URI BYTES [OLD-LAUNCHER]
	local uri=$2 n=$3 old=${4:-} i pipe=() start=() out=() in=() ostart=() oout=() oin=()
	for ((i = 0; i < stdio_runs; i++)); do
		pipe+=("$(secs_of "head -c $n /dev/zero | wc -c")")
		start+=("$(secs_of "$launcher -c $uri /bin/true")")
		out+=("$(secs_of "$launcher -c $uri -- head -c $n /dev/zero | wc -c")")
		in+=("$(secs_of "head -c $n /dev/zero | $launcher -c $uri -- wc -c")")
		[[ -n $old ]] || continue
		ostart+=("$(secs_of "$old -c $uri /bin/true")")
		oout+=("$(secs_of "$old -c $uri -- head -c $n /dev/zero | wc -c")")
		oin+=("$(secs_of "head -c $n /dev/zero | $old -c $uri -- wc -c")")
	done
	awk -v l="$1" -v n="$n" -v p="$(median_of "${pipe[@]}")" -v s="$(median_of "${start[@]}")" \
		-v o="$(median_of "${out[@]}")" -v i="$(median_of "${in[@]}")" -v r="$stdio_runs" \
		-v os="${old:+$(median_of "${ostart[@]}")}" -v oo="${old:+$(median_of "${oout[@]}")}" -v oi="${old:+$(median_of "${oin[@]}")}" 'BEGIN {
		if (o == "FAILED" || i == "FAILED" || s == "FAILED") { printf "%-48s FAILED\n", l; exit }
		mb = n / 1048576
		po = (o - s > 0 ? o - s : 0.001); pi = (i - s > 0 ? i - s : 0.001)
		printf "%-48s out %7.0f MB/s (%.2fx), in %7.0f MB/s (%.2fx); pipe %7.0f MB/s; /bin/true %.2f s (medians of %d)\n", l, mb / po, p / po, mb / pi, p / pi, mb / p, s, r
		if (os == "") exit
		if (oo == "FAILED" || oi == "FAILED" || os == "FAILED") { printf "%-48s FAILED\n", "  BENCH_STDIO_OLD"; exit }
		poo = (oo - os > 0 ? oo - os : 0.001); poi = (oi - os > 0 ? oi - os : 0.001)
		printf "%-48s out %7.0f MB/s, in %7.0f MB/s; ours %.2fx out, %.2fx in\n", "  BENCH_STDIO_OLD (the launcher before)", mb / poo, mb / poi, poo / po, poi / pi
	}'
}
log "stdio throughput"
stdio_lxc=$(stdio_line "STDIO LXC  1 GiB (x of a local pipe's speed)" lxc:/// 1073741824)
stdio_qemu=$(stdio_line "STDIO QEMU 256 MiB" qemu:///system 268435456 "${BENCH_STDIO_OLD:-}")

# Many at once: failures, hangs and leftovers.
log "soak"
if ! tests/bench/soak.sh "${BENCH_SOAK_LXC:-1000}" "${BENCH_SOAK_QEMU:-100}" >"$work/soak" 2>"$work/out"; then
	failed=1
fi

# The table.
# secs NAME: median, standard deviation and runs of NAME.
secs() {
	if [ "${median[$1]}" = FAILED ]; then
		printf '%9s\n' FAILED
		return
	fi
	awk -v m="${median[$1]}" -v s="${stddev[$1]}" -v n="${runs[$1]}" -v f="${fails[$1]}" 'BEGIN {
		printf "%9.1f ms ±%7.1f  (%d runs%s)", m * 1000, s * 1000, n, (f > 0 ? ", " f " failed" : "")
	}'
}
# ratio A B [TARGET]
ratio() {
	if [ "${median[$1]}" = FAILED ] || [ "${median[$2]}" = FAILED ]; then
		echo "n/a"
		return
	fi
	awk -v a="${median[$1]}" -v b="${median[$2]}" -v t="${3:-}" 'BEGIN {
		r = a / b
		if (t == "") printf "%.2fx", r
		else printf "%.2fx   target <= %.2fx: %s", r, t, (r <= t ? "ok" : "MISSED")
	}'
}

echo
echo "virt-sandbox bench: kernel $(basename "$kernel"), plain qemu with -accel $qemu_accel"
printf '%-48s %s\n' \
	"LXC   virt-sandbox -c lxc:/// /bin/true" "$(secs lxc)" \
	"      (a) raw libvirt LXC domain (rawlxc)" "$(secs rawlxc)" \
	"      (b) bwrap --ro-bind / / /bin/true" "$(secs bwrap)" \
	"      ours / (a)" "$(ratio lxc rawlxc 1.3)" \
	"      ours / (b)" "$(ratio lxc bwrap)" \
	"      -p (user namespace)" "$(secs lxcp)" \
	"      -p --userns off" "$(secs lxcpnouns)" \
	"      -p / -p --userns off" "$(ratio lxcp lxcpnouns)" \
	"QEMU  virt-sandbox -c qemu:///system /bin/true" "$(secs qemu)" \
	"      the same with --cold-boot" "$(secs qemucold)" \
	"      plain qemu boot, init powers off" "$(secs plain)" \
	"      from a template / plain" "$(ratio qemu plain 0.3)" \
	"      cold / plain" "$(ratio qemucold plain 1.25)" \
	"      -c qemu:///session as $session_user" "$(secs session)" \
	"      session / system" "$(ratio session qemu)"
printf '%-48s %s\n' \
	"LXC throughput, 16 sequential" "$tp_seq" \
	"               16 with xargs -P 4" "$tp_par"
echo "$files_table"
echo "initrd"
printf '      %s\n' "${initrd_lines[@]}"
echo "template"
printf '      %s\n' "$template_line"
cat "$work/flatten"
echo "$stdio_lxc"
echo "$stdio_qemu"
cat "$work/soak"

exit "$failed"
