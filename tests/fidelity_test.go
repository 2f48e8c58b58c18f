package tests

import (
	"strings"
	"testing"
)

// TestRealProc checks that /proc is the sandbox's own procfs and /sys its
// sysfs, each a filesystem of its own. On QEMU the root is a 9p export of
// the host's / spanning several host filesystems whose root inodes are all
// 1: unless the export keeps their files apart, the guest took /proc and
// /sys for one directory and /proc listed sysfs.
func TestRealProc(t *testing.T) {
	onEachDriver(t, func(t *testing.T, uri string) {
		// One line per check, so a failure says which.
		script := `ps ax -o pid= | awk 'NR == 1 { print $1 }'
readlink /proc/self/exe
grep -c '^MemTotal:' /proc/meminfo
awk '$2 == "/proc" { print $3 }' /proc/mounts
stat -f -c %T /proc /sys
stat -c '%d:%i' /proc /sys | sort -u | wc -l`
		r := sandbox(t, opts{dir: "/"}, "-c", uri, "--", "/bin/sh", "-c", script)
		want := strings.Join([]string{
			// The init, PID 1, as ps finds it through /proc.
			"1",
			"/usr/bin/readlink",
			"1",
			"proc",
			"proc",
			"sysfs",
			// Two distinct files.
			"2",
		}, "\n") + "\n"
		r.want(t, 0, want)
	})
}
