#!/bin/sh
# files.sh DIR RUNS [TREE]: reads DIR/1g whole, every file of DIR/small and,
# given TREE, stats every file under TREE (on its filesystem), RUNS times
# each, printing "begin NAME" and "end NAME" around each. tests/bench.sh
# runs it on the host and inside QEMU sandboxes and times the lines as they
# reach the host: a guest's own clock is not to be trusted under TCG on a
# busy host (here it ran many times too fast), and only the file
# access, not the boot, is timed.
dir=$1 runs=$2 tree=${3:-}
timed() { # NAME CMD...
	name=$1
	shift
	echo "begin $name"
	"$@" >/dev/null 2>&1 || echo "failed $name"
	echo "end $name"
}
i=0
while [ "$i" -lt "$runs" ]; do
	timed read dd if="$dir/1g" of=/dev/null bs=1M
	timed small sh -c "cat '$dir'/small/*"
	[ -z "$tree" ] || timed walk sh -c 'find "$0" -xdev -print0 | xargs -0 stat -c %i' "$tree"
	i=$((i + 1))
done
