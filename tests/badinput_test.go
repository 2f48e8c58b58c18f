package tests

import (
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBadInput: each bad input exits 125 with one line naming the problem
// and leaves nothing behind.
func TestBadInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"env without =", []string{"-e", "FOO", "/bin/true"}, `"FOO"`},
		{"unknown mount type", []string{"-m", "nfs:/x=/y", "/bin/true"}, `"nfs"`},
		{"unknown driver", []string{"-c", "xen:///", "/bin/true"}, `"xen"`},
		{"libvirtd not reachable", []string{"-c", "lxc:///?socket=/nonexistent/libvirt-sock", "/bin/true"}, "/nonexistent/libvirt-sock"},
		{"bad name", []string{"-n", "a/b", "/bin/true"}, `-n "a/b"`},
		{"mount target twice", []string{"-m", "ram:/x=1M", "--rw", "/x", "/bin/true"}, `--rw "/x": target /x already used by -m "ram:/x=1M"`},
		{"unknown option", []string{"--no-such-option", "/bin/true"}, "no-such-option"},
		{"no command", nil, "no command given; usage: virt-sandbox [OPTIONS] [--] COMMAND [ARGS...] (--help for more)"},
		{"empty program name", []string{"--", ""}, `COMMAND "": an empty program name`},
		{"bad memory", []string{"--memory", "lots", "/bin/true"}, `--memory "lots"`},
		{"memory too small", []string{"-c", "qemu:///system", "--memory", "300K", "/bin/true"}, `--memory "300K": too small`},
		{"no vcpus", []string{"-c", "qemu:///system", "--vcpus", "0", "/bin/true"}, "--vcpus 0"},
		{"bad security label", []string{"-s", "bogus", "/bin/true"}, `-s "bogus"`},
		// No security module on this machine kind: a static label cannot be applied.
		{"static label without a security module", []string{"-s", "static,label=system_u:system_r:svirt_t:s0", "/bin/true"}, "-s static: the host has no security module"},
		{"bad virt type", []string{"-c", "qemu:///system", "--virt-type", "xen", "/bin/true"}, `--virt-type "xen"`},
		{"bad userns", []string{"--userns", "maybe", "/bin/true"}, `--userns "maybe": want on or off`},
		{"userns on QEMU", []string{"-c", "qemu:///system", "--userns", "on", "/bin/true"}, "--userns on: user namespaces are for LXC sandboxes"},
		{"bad share fs", []string{"-c", "qemu:///system", "--share-fs", "nfs", "/bin/true"}, `--share-fs "nfs"`},
		{"virtiofs remote", []string{"-c", "qemu+ssh://nowhere.invalid/system", "--share-fs", "virtiofs", "/bin/true"}, `--share-fs virtiofs`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := leftovers()
			r := sandbox(t, opts{}, tc.args...)
			checkRefused(t, r, tc.want)
			if after := leftovers(); len(after) > len(before) {
				t.Errorf("left behind %v", after)
			}
		})
	}
}

func checkRefused(t *testing.T, r result, want string) {
	t.Helper()
	if r.code != 125 || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, want) || r.stdout != "" {
		t.Errorf("exit %d, stdout %q, stderr %q; want 125 and one line containing %s", r.code, r.stdout, r.stderr, want)
	}
}

// TestNameInUse: a second sandbox under a running one's name is refused and
// the running one is untouched.
func TestNameInUse(t *testing.T) {
	onEachDriver(t, func(t *testing.T, uri string) {
		name := "sandbox-test-" + driverName(uri)
		first := exec.Command(launcher, "-c", uri, "-n", name, "/bin/sh", "-c", "echo up; exec sleep 600")
		out, err := first.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := first.Start(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 3)
		if _, err := out.Read(buf); err != nil || string(buf) != "up\n" {
			t.Fatalf("first sandbox: read %q, %v", buf, err)
		}
		r := sandbox(t, opts{}, "-c", uri, "-n", name, "/bin/true")
		checkRefused(t, r, "already running")
		first.Process.Signal(syscall.SIGTERM)
		done := make(chan error)
		go func() { done <- first.Wait() }()
		select {
		case <-done:
		case <-time.After(time.Minute):
			first.Process.Kill()
			t.Fatal("the first sandbox did not end on SIGTERM")
		}
		if code := first.ProcessState.ExitCode(); code != 143 {
			t.Errorf("first sandbox after SIGTERM: exit %d, want 143", code)
		}
	})
}
