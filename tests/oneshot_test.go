package tests

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestOutputSeparationAndExitCode(t *testing.T) {
	onEachDriver(t, func(t *testing.T, uri string) {
		r := sandbox(t, opts{}, "-c", uri, "/bin/sh", "-c", "echo out; echo err >&2; exit 7")
		r.want(t, 7, "out\n")
		if r.stderr != "err\n" {
			t.Errorf("stderr = %q, want %q", r.stderr, "err\n")
		}
	})
}

func TestExitStatuses(t *testing.T) {
	dir := hostDir(t)
	notExec := filepath.Join(dir, "not-executable")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\necho hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	loop := filepath.Join(dir, "loop")
	if err := os.Symlink("loop", loop); err != nil {
		t.Fatal(err)
	}
	onEachDriver(t, func(t *testing.T, uri string) {
		for _, tc := range []struct {
			name   string
			argv   []string
			code   int
			stderr string
		}{
			{"signal", []string{"/bin/sh", "-c", "kill -TERM $$"}, 143, ""},
			{"missing", []string{"/no/such/command"}, 127, "/no/such/command"},
			{"missing in PATH", []string{"no-such-command"}, 127, "no-such-command: command not found"},
			{"not executable", []string{notExec}, 126, notExec},
			// What a shell says: exec refused it.
			{"symbolic link loop", []string{loop}, 126, loop + ": cannot execute: too many levels of symbolic links"},
		} {
			r := sandbox(t, opts{}, append([]string{"-c", uri}, tc.argv...)...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.stderr) {
				t.Errorf("%s: exit %d, stderr %q; want exit %d, stderr containing %q", tc.name, r.code, r.stderr, tc.code, tc.stderr)
			}
		}
	})
}

func TestLargeStdinRoundTrip(t *testing.T) {
	in := filepath.Join(t.TempDir(), "in")
	f, err := os.Create(in)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(f, h), rand.Reader, 50_000_000); err != nil {
		t.Fatal(err)
	}
	f.Close()
	want := hex.EncodeToString(h.Sum(nil)) + "  -\n"
	onEachDriver(t, func(t *testing.T, uri string) {
		stdin, err := os.Open(in)
		if err != nil {
			t.Fatal(err)
		}
		defer stdin.Close()
		r := sandbox(t, opts{stdin: stdin}, "-c", uri, "sha256sum")
		r.want(t, 0, want)
		t.Logf("50 MB through %s in %v", uri, r.elapsed)
	})
}

func TestReadOnlyRootIdentityEnvAndDirectory(t *testing.T) {
	u := lookupUser(t)
	onEachDriver(t, func(t *testing.T, uri string) {
		r := sandbox(t, opts{}, "-c", uri, "/bin/sh", "-c", "touch /usr/x")
		if r.code == 0 || !strings.Contains(r.stderr, "Read-only file system") {
			t.Errorf("touch /usr/x: exit %d, stderr %q; want a read-only file system error", r.code, r.stderr)
		}
		r = sandbox(t, opts{asUser: true}, "-c", uri, "id", "-u")
		r.want(t, 0, u.Uid+"\n")
		r = sandbox(t, opts{asUser: true}, "-c", uri, "-p", "id", "-u")
		r.want(t, 0, "0\n")
		r = sandbox(t, opts{asUser: true}, "-c", uri, "-e", "FOO=bar=baz", "/bin/sh", "-c", `echo "$FOO"; echo "$HOME"; pwd`)
		r.want(t, 0, "bar=baz\n"+u.HomeDir+"\n"+u.HomeDir+"\n")
		r = sandbox(t, opts{dir: "/usr/share"}, "-c", uri, "pwd")
		r.want(t, 0, "/usr/share\n")
	})
}

func TestManyAtOnce(t *testing.T) {
	onEachDriver(t, func(t *testing.T, uri string) {
		var wg sync.WaitGroup
		results := make([]result, 8)
		for i := range results {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = sandbox(t, opts{}, "-c", uri, "/bin/sh", "-c", fmt.Sprintf("echo %d", i))
			}()
		}
		wg.Wait()
		for i, r := range results {
			r.want(t, 0, fmt.Sprintf("%d\n", i))
		}
	})
}

// TestStdinEnds: the program sees the end of its stdin where the caller's
// ends, also when it is empty, and a program that never reads a stdin that
// never ends still ends its sandbox.
func TestStdinEnds(t *testing.T) {
	onEachDriver(t, func(t *testing.T, uri string) {
		r := sandbox(t, opts{stdin: strings.NewReader("abc")}, "-c", uri, "/bin/sh", "-c", "cat; echo; echo end")
		r.want(t, 0, "abc\nend\n")
		r = sandbox(t, opts{}, "-c", uri, "/bin/sh", "-c", "cat; echo end")
		r.want(t, 0, "end\n")
		// A file, not a reader: Wait would wait for a copy of it to end.
		never, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer never.Close()
		defer w.Close()
		r = sandbox(t, opts{stdin: never}, "-c", uri, "/bin/sh", "-c", "echo ignored")
		r.want(t, 0, "ignored\n")
	})
}

// TestSignalOnPipes: a signal to the launcher reaches the program on pipes,
// which handles it and says so on its stdout.
func TestSignalOnPipes(t *testing.T) {
	onEachDriver(t, func(t *testing.T, uri string) {
		cmd := exec.Command(launcher, "-c", uri, "/bin/sh", "-c",
			`trap 'echo got TERM; exit 5' TERM; echo ready; while :; do sleep 0.1; done`)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		timer := time.AfterFunc(3*time.Minute, func() { cmd.Process.Kill() })
		defer timer.Stop()
		rd := bufio.NewReader(out)
		if line, err := rd.ReadString('\n'); line != "ready\n" {
			t.Fatalf("read %q, %v; want ready", line, err)
		}
		cmd.Process.Signal(syscall.SIGTERM)
		rest, _ := io.ReadAll(rd)
		cmd.Wait()
		if code := cmd.ProcessState.ExitCode(); code != 5 || string(rest) != "got TERM\n" {
			t.Errorf("after SIGTERM: exit %d, stdout %q; want exit 5, %q", code, rest, "got TERM\n")
		}
	})
}
