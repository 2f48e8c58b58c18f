package tests

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStartDeadline: a sandbox that has not started within --start-timeout
// is destroyed, with one line saying so and what was last seen, exit 125,
// and nothing left.
func TestStartDeadline(t *testing.T) {
	onEachDriver(t, func(t *testing.T, uri string) {
		name := uniqueName("deadline")
		r := sandbox(t, opts{}, "-c", uri, "-n", name, "--start-timeout", "0.01", "/bin/true")
		checkRefused(t, r, "did not start within 10ms (--start-timeout); last seen: ")
		checkGone(t, uri, name)
	})
}

// TestBareSecondsTimeout: --timeout takes bare seconds, as timeout(1) does.
func TestBareSecondsTimeout(t *testing.T) {
	r := sandbox(t, opts{}, "--timeout", "1.5", "/bin/sleep", "30")
	if r.code != 124 {
		t.Errorf("exit %d, want 124; stderr %q", r.code, r.stderr)
	}
}

// TestKilledLauncherLeavesNothing: a launcher killed with SIGKILL while the
// domain is being made, while it boots and while the program runs leaves
// no domain (libvirt destroys it with the launcher's connection), and the
// next run sweeps the state directory it could not remove: that holds the
// program's arguments and environment.
func TestKilledLauncherLeavesNothing(t *testing.T) {
	onEachDriver(t, func(t *testing.T, uri string) {
		for _, after := range []time.Duration{20 * time.Millisecond, 150 * time.Millisecond, 0} {
			name := uniqueName("killed")
			cmd := exec.Command(launcher, "-c", uri, "-n", name, "-e", "SECRET=s3cr3t", "/bin/sh", "-c", "echo running; sleep 600")
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			if after > 0 {
				time.Sleep(after)
			} else if line, _ := bufio.NewReader(out).ReadString('\n'); line != "running\n" {
				t.Errorf("program printed %q, want running", line)
			}
			cmd.Process.Signal(syscall.SIGKILL)
			cmd.Wait()
			awaitDomainGone(t, uri, name)
			sandbox(t, opts{}, "-c", "lxc:///", "/bin/true").want(t, 0, "")
			checkGone(t, uri, name)
		}
	})
}

// awaitDomainGone waits for libvirt to destroy the domain of a launcher
// that died.
func awaitDomainGone(t *testing.T, uri, name string) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if !domainExists(uri, name) {
			return
		}
	}
	t.Errorf("domain %s still there a minute after its launcher died", name)
}

// TestBrokenStdout: a launcher whose stdout reader goes away passes SIGPIPE
// on to the program, as a pipe would, instead of dying of it with the
// sandbox's state behind.
func TestBrokenStdout(t *testing.T) {
	onEachDriver(t, func(t *testing.T, uri string) {
		name := uniqueName("sigpipe")
		script := launcher + " -c " + uri + " -n " + name + ` -- sh -c 'yes | head -c 100000000' | head -c 10 >/dev/null; echo ${PIPESTATUS[0]}`
		out, err := exec.Command("/bin/bash", "-c", script).Output()
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if got := strings.TrimSpace(string(out)); got != "141" {
			t.Errorf("launcher exit status %s, want 141 (the program's SIGPIPE)", got)
		}
		checkGone(t, uri, name)
	})
}

// TestConfigGoneOnceStarted: the program's arguments and environment are
// on the host's disk only until the init has read them.
func TestConfigGoneOnceStarted(t *testing.T) {
	onEachDriver(t, func(t *testing.T, uri string) {
		name := uniqueName("config")
		cmd := exec.Command(launcher, "-c", uri, "-n", name, "-e", "SECRET=s3cr3t", "/bin/sh", "-c", "echo running; cat >/dev/null")
		in, _ := cmd.StdinPipe()
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if line, _ := bufio.NewReader(out).ReadString('\n'); line != "running\n" {
			t.Errorf("program printed %q, want running", line)
		}
		if _, err := os.Stat(filepath.Join("/run/virt-sandbox", name, "sandbox.json")); !os.IsNotExist(err) {
			t.Errorf("the run's config is still on disk while its program runs (%v)", err)
		}
		in.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("launcher: %v", err)
		}
		checkGone(t, uri, name)
	})
}

// TestLibvirtdRestart: libvirtd stopping and coming back while sandboxes
// run ends their launchers with 125 and one line, and leaves nothing: the
// launchers reconnect and destroy what libvirtd took back. It restarts the
// system libvirtd, so it runs alone (no t.Parallel).
func TestLibvirtdRestart(t *testing.T) {
	type running struct {
		uri, name string
		cmd       *exec.Cmd
		stderr    *strings.Builder
	}
	var runs []running
	for _, uri := range drivers {
		r := running{uri: uri, name: uniqueName("restart"), stderr: new(strings.Builder)}
		r.cmd = exec.Command(launcher, "-c", uri, "-n", r.name, "/bin/sh", "-c", "echo started; sleep 600")
		r.cmd.Stderr = r.stderr
		out, _ := r.cmd.StdoutPipe()
		if err := r.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer r.cmd.Process.Kill()
		if line, _ := bufio.NewReader(out).ReadString('\n'); line != "started\n" {
			t.Fatalf("%s: program printed %q, want started; stderr %s", uri, line, r.stderr)
		}
		runs = append(runs, r)
	}
	pid, err := os.ReadFile("/run/libvirtd.pid")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("kill", strings.TrimSpace(string(pid))).CombinedOutput(); err != nil {
		t.Fatalf("stopping libvirtd: %v %s", err, out)
	}
	time.Sleep(2 * time.Second)
	if out, err := exec.Command("./setup-host.sh").CombinedOutput(); err != nil {
		t.Fatalf("restarting libvirtd: %v %s", err, out)
	}
	for _, r := range runs {
		done := make(chan error, 1)
		go func() { done <- r.cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Fatalf("%s: the launcher did not end within a minute of libvirtd's restart", r.uri)
		}
		res := result{code: r.cmd.ProcessState.ExitCode(), stderr: r.stderr.String()}
		checkRefused(t, res, "the connection to libvirt closed while the sandbox ran")
		checkGone(t, r.uri, r.name)
	}
}
