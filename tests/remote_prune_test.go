package tests

import (
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestRemotePrune frees the stand-in remote host's uploads: prune -c
// removes what no domain there uses (a leftover of an older launcher),
// and keeps what a running sandbox uses and an upload under way; once the
// sandbox ended, its volumes go too, and the next run uploads again.
func TestRemotePrune(t *testing.T) {
	addr := remoteHost(t)
	uri := "lxc+tcp://" + addr + "/"
	virsh := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("virsh", append([]string{"-q", "-c", uri}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("virsh %q: %v: %s", args, err, out)
		}
	}
	// The first run makes the pool.
	sandbox(t, opts{}, "-c", uri, "--", "/bin/true").want(t, 0, "")
	// An older launcher's initrd, whole; an upload under way, unmarked
	// and fresh.
	old, underWay := "initrd-prunetest"+randomHex(t), "init-prunetest"+randomHex(t)
	virsh("vol-create-as", "virt-sandbox", old, "4096")
	virsh("vol-create-as", "virt-sandbox", old+".done", "0")
	virsh("vol-create-as", "virt-sandbox", underWay, "4096")
	defer exec.Command("virsh", "-c", uri, "vol-delete", "--pool", "virt-sandbox", underWay).Run()

	name := uniqueName("prune")
	stdin, feed := io.Pipe()
	done := make(chan result)
	go func() { done <- sandbox(t, opts{stdin: stdin}, "-c", uri, "-n", name, "--", "/bin/cat") }()
	for deadline := time.Now().Add(time.Minute); !domainExists(uri, name); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			feed.Close()
			t.Fatalf("the sandbox did not start: %+v", <-done)
		}
	}
	inUse := remoteVolumes(t, addr)

	out := imageOK(t, "prune", "-c", uri)
	t.Logf("prune -c while a sandbox ran:\n%s", out)
	left := remoteVolumes(t, addr)
	if !slices.ContainsFunc(left, func(v string) bool { return strings.HasPrefix(v, "init-") && v != underWay }) {
		t.Errorf("prune -c removed the running sandbox's init: volumes %q", left)
	}
	if !strings.Contains(out, "removed "+old+"\n") || slices.Contains(left, old) || slices.Contains(left, old+".done") {
		t.Errorf("prune -c left the unused volume %s: printed %q, volumes %q", old, out, left)
	}
	for _, v := range inUse {
		if v != old && v != old+".done" && !slices.Contains(left, v) {
			t.Errorf("prune -c removed %s while a sandbox ran (printed %q)", v, out)
		}
	}

	io.WriteString(feed, "still there\n")
	feed.Close()
	(<-done).want(t, 0, "still there\n")

	out = imageOK(t, "prune", "-c", uri)
	t.Logf("prune -c once it ended:\n%s", out)
	left = remoteVolumes(t, addr)
	if want := []string{underWay}; !slices.Equal(left, want) {
		t.Errorf("after the sandbox ended, prune -c left %q (printed %q), want %q", left, out, want)
	}
	r := sandbox(t, opts{}, "-c", uri, "-d", "--", "/bin/echo", "again")
	r.want(t, 0, "again\n")
	if !strings.Contains(r.stderr, "uploaded the") {
		t.Errorf("the run after prune -c uploaded nothing:\n%s", r.stderr)
	}

	if r := imageRun(t, opts{}, "prune", "-c", "lxc:///"); r.code != 125 || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("prune -c lxc:///: exit %d, stderr %q; want 125 and one line", r.code, r.stderr)
	}
}
