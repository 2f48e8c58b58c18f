#!/bin/sh
# files.sh DIR RUNS [TREE]: times, RUNS times each, reading DIR/1g whole,
# reading every file of DIR/small and, given TREE, a stat of every file
# under TREE (on its filesystem); prints one "NAME SECONDS" line per run. tests/bench.sh runs it
# on the host and inside QEMU sandboxes, where it times only the file
# access, not the boot.
dir=$1 runs=$2 tree=${3:-}
now() { date +%s.%N; }
timed() { # NAME CMD...
	name=$1
	shift
	start=$(now)
	if "$@" >/dev/null 2>&1; then
		awk -v n="$name" -v a="$start" -v b="$(now)" 'BEGIN { printf "%s %.3f\n", n, b - a }'
	else
		echo "$name FAILED"
	fi
}
i=0
while [ "$i" -lt "$runs" ]; do
	timed read dd if="$dir/1g" of=/dev/null bs=1M
	timed small sh -c "cat '$dir'/small/*"
	[ -z "$tree" ] || timed walk sh -c 'find "$0" -xdev -print0 | xargs -0 stat -c %i' "$tree"
	i=$((i + 1))
done
