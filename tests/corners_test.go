package tests

import (
	"os"
	"path/filepath"
	"testing"
)

// Corners of fidelity: what a shell or the host would do, in places the
// sandbox's own mounts make special.

// TestRunHostBindUntouched: a host-bind over /run hides the sandbox's own
// /run, where the init keeps its files: the hostname still shows, includes
// still arrive, and nothing is written into the host directory.
func TestRunHostBindUntouched(t *testing.T) {
	t.Parallel()
	onEachDriver(t, func(t *testing.T, uri string) {
		dir := hostDir(t)
		writeFile(t, filepath.Join(dir, "seed"), "run seed\n", 0o644)
		inc := filepath.Join(hostDir(t), "inc")
		writeFile(t, inc, "included\n", 0o644)
		name := sandboxName(t, uri)
		r := sandbox(t, opts{}, "-c", uri, "-n", name, "-m", "host-bind:/run="+dir,
			"-m", "ram:/mem=1M", "-i", "/mem/inc="+inc,
			"/bin/sh", "-c", "cat /etc/hostname /run/seed /mem/inc; ls -A /run")
		r.want(t, 0, name+"\nrun seed\nincluded\nseed\n")
		if entries, _ := os.ReadDir(dir); len(entries) != 1 {
			t.Errorf("host directory bound on /run holds %v after the run; want only seed", entries)
		}
		checkGone(t, uri, name)
	})
}
