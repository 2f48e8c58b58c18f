package tests

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
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

// TestWorkdirInTmp: a working directory inside /tmp, which every sandbox
// has its own of, is there at its path, read-only unless made writable;
// a file can be included into the sandbox's /tmp.
func TestWorkdirInTmp(t *testing.T) {
	t.Parallel()
	onEachDriver(t, func(t *testing.T, uri string) {
		dir, err := os.MkdirTemp("/tmp", "virt-sandbox-test-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		writeFile(t, filepath.Join(dir, "seed"), "seed in tmp\n", 0o644)
		r := sandbox(t, opts{dir: dir}, "-c", uri, "-i", "/tmp/inc="+filepath.Join(dir, "seed"), "/bin/sh", "-c", `
			pwd; cat seed /tmp/inc
			touch x 2>/dev/null && echo writable || echo read-only`)
		r.want(t, 0, dir+"\nseed in tmp\nseed in tmp\nread-only\n")
		r = sandbox(t, opts{dir: dir}, "-c", uri, "--rw", ".", "/bin/sh", "-c", "echo inside >x && echo written")
		r.want(t, 0, "written\n")
		if got := readFile(t, filepath.Join(dir, "x")); got != "inside\n" {
			t.Errorf("%s/x on the host = %q, want %q", dir, got, "inside\n")
		}
	})
}

// TestWorkdirNotEnterable: a working directory the program's user cannot
// enter is the sandbox's failure, 125, on one line naming it, not the
// command's 126.
func TestWorkdirNotEnterable(t *testing.T) {
	t.Parallel()
	dir := hostDir(t)
	closed := filepath.Join(dir, "closed")
	if err := os.Mkdir(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	onEachDriver(t, func(t *testing.T, uri string) {
		r := sandbox(t, opts{dir: closed}, "-c", uri, "-S", "nobody", "pwd")
		want := "working directory " + closed + ": nobody (uid 65534) cannot enter it: permission denied"
		if r.code != 125 || r.stdout != "" || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, want) {
			t.Errorf("exit %d, stdout %q, stderr %q; want 125 and one line containing %q", r.code, r.stdout, r.stderr, want)
		}
		// Whom it lets in, it lets in.
		r = sandbox(t, opts{dir: closed}, "-c", uri, "pwd")
		r.want(t, 0, closed+"\n")
	})
}

// TestMemoryBareMiB: --memory 300 is 300 MiB, as for qemu -m: the QEMU
// guest's kernel has a little less, an LXC container's limit is exactly it.
func TestMemoryBareMiB(t *testing.T) {
	t.Parallel()
	onEachDriver(t, func(t *testing.T, uri string) {
		r := sandbox(t, opts{}, "-c", uri, "--memory", "300", "awk", "/^MemTotal:/ { print $2 }", "/proc/meminfo")
		kib, err := strconv.Atoi(strings.TrimSpace(r.stdout))
		if r.code != 0 || err != nil || kib > 300<<10 || kib < 200<<10 {
			t.Errorf("exit %d, MemTotal %q kB; want between 200 and 300 MiB; stderr:\n%s", r.code, r.stdout, r.stderr)
		}
	})
}
