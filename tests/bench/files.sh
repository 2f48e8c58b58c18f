#!/bin/sh
# files.sh [--tmpfs] DIR RUNS [TREE]: reads DIR/1g whole, every file of
# DIR/small and, given TREE, stats every file under TREE (on its
# filesystem), RUNS times each, printing "begin NAME" and "end NAME" around
# each. tests/bench.sh runs it on the host and inside QEMU sandboxes and
# times the lines as they reach the host: a guest's own clock is not to be
# trusted under TCG on a busy host (here it ran many times too fast), and
# only the file access, not the boot, is timed.
#
# --tmpfs first copies DIR/1g, DIR/small and the shape of TREE (its
# directories and empty files, cp --attributes-only) to the tmpfs /tmp and
# measures there: in a sandbox, the same work with no transport at all, what
# the guest's CPU alone allows (under TCG, the ceiling of any transport).
tmpfs=
if [ "$1" = --tmpfs ]; then
	tmpfs=1
	shift
fi
dir=$1 runs=$2 tree=${3:-}
if [ -n "$tmpfs" ]; then
	t=$(mktemp -d /tmp/files.XXXXXX) || exit 1
	if [ "$(stat -f -c %T "$t")" != tmpfs ]; then
		echo "files.sh: /tmp is not a tmpfs" >&2
		exit 1
	fi
	echo "copying to the tmpfs $t"
	cp "$dir/1g" "$t/1g" && cp -r "$dir/small" "$t/small" || exit 1
	if [ -n "$tree" ]; then
		cp -a --attributes-only "$tree" "$t/tree" || exit 1
		tree=$t/tree
	fi
	dir=$t
fi
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
