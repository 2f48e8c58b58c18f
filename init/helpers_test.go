package main

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/virt-sandbox/virt-sandbox/config"
	"github.com/virt-sandbox/virt-sandbox/sandbox/console"
)

func TestCRLFWriter(t *testing.T) {
	for _, tt := range []struct {
		name   string
		writes []string
		want   string
	}{
		{"no CR", []string{"a\nb\n"}, "a\nb\n"},
		{"CRLF", []string{"a\r\nb\r\n"}, "a\nb\n"},
		{"CRLF CRLF", []string{"\r\n\r\n"}, "\n\n"},
		// A progress bar redraws its line with a lone \r: kept.
		{"lone CR", []string{"10%\r20%\r\n"}, "10%\r20%\n"},
		{"CR CR LF", []string{"\r\r\n"}, "\r\n"},
		// The terminal's output comes in reads of any size: a \r\n may
		// be split across two of them.
		{"CRLF split", []string{"a\r", "\nb"}, "a\nb"},
		{"CR then other", []string{"a\r", "b"}, "a\rb"},
		{"CR then CR LF", []string{"a\r", "\r\n"}, "a\r\n"},
		{"CR, CR, LF", []string{"\r", "\r", "\n"}, "\r\n"},
		{"CR, empty, LF", []string{"a\r", "", "\n"}, "a\n"},
		{"CR, empty, other", []string{"a\r", "", "b"}, "a\rb"},
		// A trailing \r waits for the next write to say what it is.
		{"CR last", []string{"a\r"}, "a"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			w := &crlfWriter{w: &buf}
			for _, s := range tt.writes {
				if n, err := w.Write([]byte(s)); err != nil || n != len(s) {
					t.Fatalf("crlfWriter.Write(%q) = %d, %v, want %d, nil", s, n, err, len(s))
				}
			}
			if got := buf.String(); got != tt.want {
				t.Errorf("crlfWriter after %q = %q, want %q", tt.writes, got, tt.want)
			}
		})
	}
}

// TestCRLFWriterSplits checks that where the writes split the output makes
// no difference: every split into three writes gives what one write does.
func TestCRLFWriterSplits(t *testing.T) {
	for _, in := range []string{"a\r\nb\rc\r\r\n\n\r", "\r\n\r\n\r\r\r\n", "x\r\ny\r\nz\r\n"} {
		// A last byte that is not \r flushes a pending one.
		want := strings.ReplaceAll(in+".", "\r\n", "\n")
		for i := 0; i <= len(in); i++ {
			for j := i; j <= len(in); j++ {
				var buf bytes.Buffer
				w := &crlfWriter{w: &buf}
				for _, s := range []string{in[:i], in[i:j], in[j:], "."} {
					w.Write([]byte(s))
				}
				if got := buf.String(); got != want {
					t.Errorf("crlfWriter after %q = %q, want %q", []string{in[:i], in[i:j], in[j:], "."}, got, want)
				}
			}
		}
	}
}

func TestWithDefaults(t *testing.T) {
	all := map[string]string{"HOME": "/home/u", "USER": "u", "LOGNAME": "u"}
	for _, tt := range []struct {
		name     string
		env      []string
		defaults map[string]string
		want     []string
	}{
		{"empty env", nil, all, []string{"HOME=/home/u", "USER=u", "LOGNAME=u"}},
		{"HOME set", []string{"HOME=/x"}, all, []string{"HOME=/x", "USER=u", "LOGNAME=u"}},
		{"all set", []string{"LOGNAME=l", "USER=v", "HOME=/x"}, all, []string{"LOGNAME=l", "USER=v", "HOME=/x"}},
		// Set to the empty string is set: the user asked for it.
		{"HOME empty", []string{"HOME="}, all, []string{"HOME=", "USER=u", "LOGNAME=u"}},
		// An identity without a home or name (a bare UID) adds none.
		{"empty defaults", []string{"PATH=/bin"}, map[string]string{"HOME": "", "USER": "", "LOGNAME": ""}, []string{"PATH=/bin"}},
		{"nil defaults", []string{"PATH=/bin"}, nil, []string{"PATH=/bin"}},
		// A key that merely starts like one is another variable.
		{"HOMEDIR set", []string{"HOMEDIR=/x"}, all, []string{"HOMEDIR=/x", "HOME=/home/u", "USER=u", "LOGNAME=u"}},
		// Only the three login variables are defaults.
		{"other default", nil, map[string]string{"SHELL": "/bin/sh"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := withDefaults(tt.env, tt.defaults); !slices.Equal(got, tt.want) {
				t.Errorf("withDefaults(%q, %v) = %q, want %q", tt.env, tt.defaults, got, tt.want)
			}
		})
	}
}

// TestWithDefaultsKeepsEnv checks that the configured environment is not
// written through: it is shared by every command a service runs.
func TestWithDefaultsKeepsEnv(t *testing.T) {
	backing := make([]string, 1, 8)
	backing[0] = "PATH=/bin"
	withDefaults(backing, map[string]string{"HOME": "/root"})
	if spare := backing[:2][1]; spare != "" {
		t.Errorf("withDefaults wrote %q past the end of its env", spare)
	}
}

func TestHasKey(t *testing.T) {
	env := []string{"PATH=/bin", "EMPTY=", "NOEQUALS", "A=B=C"}
	for _, tt := range []struct {
		key  string
		want bool
	}{
		{"PATH", true},
		{"EMPTY", true},
		{"A", true},
		{"NOEQUALS", false},
		{"PAT", false},
		{"PATH=", false},
		{"path", false},
		{"B", false},
	} {
		if got := hasKey(env, tt.key); got != tt.want {
			t.Errorf("hasKey(%q, %q) = %v, want %v", env, tt.key, got, tt.want)
		}
	}
}

func TestMissingMountPoint(t *testing.T) {
	const missing = "/virt-sandbox-test-missing"
	if _, err := os.Stat(missing); err == nil {
		t.Skipf("%s exists", missing)
	}
	if _, err := os.Stat("/proc/self"); err != nil {
		t.Skipf("no /proc: %v", err)
	}
	mounts := func(targets ...string) []config.Mount {
		var ms []config.Mount
		for _, tg := range targets {
			ms = append(ms, config.Mount{Type: config.RAM, Target: tg})
		}
		return ms
	}
	for _, tt := range []struct {
		name    string
		targets []string
		want    bool
	}{
		{"none", nil, false},
		{"existing", []string{"/proc", "/"}, false},
		{"missing", []string{"/proc", missing}, true},
		{"missing under an existing directory", []string{"/proc/virt-sandbox-test-missing"}, true},
		// Inside another mount the target is made on that mount, not on
		// the root, in either order.
		{"nested in a mount", []string{"/proc", "/proc/virt-sandbox-test-missing"}, false},
		{"nested in a mount, inner first", []string{"/proc/virt-sandbox-test-missing", "/proc"}, false},
		{"nested in a missing mount", []string{missing, missing + "/inner"}, true},
		// The scratch tmpfs is mounted before the user's mounts.
		{"under /tmp", []string{"/tmp/virt-sandbox-test-missing/deep"}, false},
		{"under /dev/shm", []string{"/dev/shm/virt-sandbox-test-missing"}, false},
		// So is the sandbox's own /run (the caller's directory may be in it).
		{"under /run", []string{"/run/user/virt-sandbox-test-missing"}, false},
		// A name that only starts like /tmp is not inside it.
		{"beside /tmp", []string{"/tmpvirt-sandbox-test-missing"}, true},
		{"beside a mount", []string{"/proc", "/procvirt-sandbox-test-missing"}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := missingMountPoint(mounts(tt.targets...)); got != tt.want {
				t.Errorf("missingMountPoint(%q) = %v, want %v", tt.targets, got, tt.want)
			}
		})
	}
}

// failedStatus returns the status of err if it is a *console.Failed, or -1.
func failedStatus(err error) int {
	var f *console.Failed
	if errors.As(err, &f) {
		return f.Status
	}
	return -1
}

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	prog := filepath.Join(dir, "prog")
	if err := os.WriteFile(prog, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "noexec"), []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	// The init's own PATH is neither searched nor changed.
	t.Setenv("PATH", other)
	for _, tt := range []struct {
		name, arg string
		env       []string
		want      string
		status    int // of the *console.Failed, 0 for none
	}{
		// A path is the user's choice, checked when it is executed.
		{"absolute", "/no/such/prog", nil, "/no/such/prog", 0},
		{"relative with a slash", "./prog", []string{"PATH=" + other}, "./prog", 0},
		{"along the program's PATH", "prog", []string{"HOME=/", "PATH=" + other + ":" + dir}, prog, 0},
		{"not along the program's PATH", "prog", []string{"PATH=" + other}, "", 127},
		{"not executable", "noexec", []string{"PATH=" + dir}, "", 127},
		{"missing", "virt-sandbox-no-such-command", []string{"PATH=" + dir}, "", 127},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := lookPath(tt.arg, tt.env)
			if tt.status != 0 {
				if st := failedStatus(err); st != tt.status {
					t.Errorf("lookPath(%q, %q) = %q, %v, want a *console.Failed of status %d", tt.arg, tt.env, got, err, tt.status)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("lookPath(%q, %q) = %q, %v, want %q", tt.arg, tt.env, got, err, tt.want)
			}
		})
	}
	if got := os.Getenv("PATH"); got != other {
		t.Errorf("the init's PATH is %q after the look-ups, want %q", got, other)
	}
}

func TestExecFailureMapping(t *testing.T) {
	other := errors.New("other")
	for _, tt := range []struct {
		name   string
		err    error
		status int // of the *console.Failed, or 0: err returned as is
	}{
		{"ENOENT", &fs.PathError{Op: "fork/exec", Path: "/x", Err: unix.ENOENT}, 127},
		{"EACCES", &fs.PathError{Op: "fork/exec", Path: "/x", Err: unix.EACCES}, 126},
		{"ENOEXEC", &fs.PathError{Op: "fork/exec", Path: "/x", Err: unix.ENOEXEC}, 126},
		{"EISDIR", &fs.PathError{Op: "fork/exec", Path: "/x", Err: unix.EISDIR}, 126},
		{"EPERM", &fs.PathError{Op: "fork/exec", Path: "/x", Err: unix.EPERM}, 126},
		{"bare ENOENT", unix.ENOENT, 127},
		// As bash: whatever else execve refuses is 126.
		{"E2BIG", &fs.PathError{Op: "fork/exec", Path: "/x", Err: unix.E2BIG}, 126},
		{"ELOOP", &fs.PathError{Op: "fork/exec", Path: "/x", Err: unix.ELOOP}, 126},
		{"ENOTDIR", &fs.PathError{Op: "fork/exec", Path: "/x", Err: unix.ENOTDIR}, 126},
		// Not the exec's: the init's own failures stay 125.
		{"chdir", &fs.PathError{Op: "chdir", Path: "/d", Err: unix.EACCES}, 0},
		{"ENOMEM", unix.ENOMEM, 0},
		{"other", other, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := execFailure("/x", tt.err)
			if tt.status == 0 {
				if got != tt.err {
					t.Errorf("execFailure(%v) = %v, want it unchanged", tt.err, got)
				}
				return
			}
			if st := failedStatus(got); st != tt.status {
				t.Errorf("execFailure(%v) = %v, want a *console.Failed of status %d", tt.err, got, tt.status)
			}
			if !strings.HasPrefix(got.Error(), "/x: ") {
				t.Errorf("execFailure(%v) = %q, want the path first", tt.err, got)
			}
		})
	}
}

// TestExecFailureReal checks the mapping on what starting a process really
// returns, so that the errors the switch tests for are the ones it gets.
func TestExecFailureReal(t *testing.T) {
	dir := t.TempDir()
	noexec := filepath.Join(dir, "noexec")
	if err := os.WriteFile(noexec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Executable, but neither ELF nor #!: the kernel says ENOEXEC.
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, []byte("\x00\x01\x02\x03 not a program"), 0o755); err != nil {
		t.Fatal(err)
	}
	loop := filepath.Join(dir, "loop")
	if err := os.Symlink("loop", loop); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, path string
		status     int
		message    string
	}{
		{"missing", filepath.Join(dir, "none"), 127, "no such file or directory"},
		{"not executable", noexec, 126, "cannot execute: permission denied"},
		{"not a program", garbage, 126, "cannot execute: exec format error"},
		{"directory", dir, 126, "cannot execute: permission denied"},
		{"symbolic link loop", loop, 126, "cannot execute: too many levels of symbolic links"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd := &exec.Cmd{Path: tt.path, Args: []string{tt.path}}
			err := cmd.Start()
			if err == nil {
				cmd.Wait()
				t.Fatalf("starting %s succeeded", tt.path)
			}
			got := execFailure(tt.path, err)
			if st := failedStatus(got); st != tt.status || !strings.Contains(got.Error(), tt.message) {
				t.Errorf("execFailure(%s, %v) = %v, want status %d and %q", tt.path, err, got, tt.status, tt.message)
			}
		})
	}
}

// TestCanEnter checks the working directory as the program's credentials,
// not the init's: it needs root to take them.
func TestCanEnter(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("changing credentials needs root")
	}
	rootOnly := t.TempDir()
	os.Chmod(rootOnly, 0o700)
	nobodys := filepath.Join(rootOnly, "nobodys")
	if err := os.Mkdir(nobodys, 0o700); err != nil {
		t.Fatal(err)
	}
	open := t.TempDir()
	os.Chmod(open, 0o755)
	// t.TempDir's parent is the test's own, 0700.
	os.Chmod(filepath.Dir(open), 0o755)
	file := filepath.Join(open, "file")
	if err := os.WriteFile(file, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	nobody := identity{UID: 65534, GID: 65534, User: "nobody"}
	for _, tt := range []struct {
		name       string
		dir        string
		id         identity
		privileged bool
		want       error
	}{
		{"open directory", open, nobody, false, nil},
		{"another's directory", rootOnly, nobody, false, unix.EACCES},
		{"root without capabilities", nobodys, identity{}, false, unix.EACCES},
		{"root with capabilities", rootOnly, identity{}, true, nil},
		{"missing", filepath.Join(open, "none"), nobody, false, unix.ENOENT},
		{"not a directory", file, nobody, false, unix.ENOTDIR},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "root without capabilities" {
				os.Chmod(rootOnly, 0o755)
				os.Chown(nobodys, 65534, 65534)
				defer os.Chmod(rootOnly, 0o700)
			}
			if err := canEnter(tt.dir, tt.id, tt.privileged); !errors.Is(err, tt.want) && err != tt.want {
				t.Errorf("canEnter(%s, uid %d) = %v, want %v", tt.dir, tt.id.UID, err, tt.want)
			}
		})
	}
	// The init's own credentials are untouched.
	if err := unix.Faccessat2(unix.AT_FDCWD, nobodys, unix.X_OK, unix.AT_EACCESS); err != nil {
		t.Errorf("the test's own access to %s after the checks: %v", nobodys, err)
	}
}

func TestResolveIdentityGiven(t *testing.T) {
	for _, c := range []config.Identity{
		{},
		{UID: 1000, GID: 1000, Groups: []int{10, 20}, User: "someone", Home: "/home/someone"},
		// Not looked up, so a user the sandbox lacks is no error.
		{UID: 4242, GID: 4343, User: "virt-sandbox-no-such-user", Privileged: true},
	} {
		got, err := resolveIdentity(c)
		want := identity{UID: c.UID, GID: c.GID, Groups: c.Groups, User: c.User, Home: c.Home}
		if err != nil || got.UID != want.UID || got.GID != want.GID || !slices.Equal(got.Groups, want.Groups) ||
			got.User != want.User || got.Home != want.Home {
			t.Errorf("resolveIdentity(%+v) = %+v, %v, want %+v, nil", c, got, err, want)
		}
	}
}

func TestResolveIdentityByName(t *testing.T) {
	got, err := resolveIdentity(config.Identity{User: "root", UID: 99, GID: 99, Groups: []int{99}, ByName: true})
	if err != nil {
		t.Skipf("no root user here: %v", err)
	}
	// The sandbox's passwd wins over what the launcher guessed.
	if got.UID != 0 || got.GID != 0 || got.Home == "" || slices.Contains(got.Groups, 99) {
		t.Errorf("resolveIdentity(root by name) = %+v, want uid 0, gid 0, root's home and groups", got)
	}
	if got, err := resolveIdentity(config.Identity{User: "virt-sandbox-no-such-user", ByName: true}); err == nil ||
		!strings.Contains(err.Error(), "virt-sandbox-no-such-user") {
		t.Errorf("resolveIdentity(missing user by name) = %+v, %v, want an error naming the user", got, err)
	}
}

// startChild starts argv without os/exec, whose Wait would race the
// reaper for the exit.
func startChild(t *testing.T, argv ...string) int {
	t.Helper()
	path, err := exec.LookPath(argv[0])
	if err != nil {
		t.Skipf("%s: %v", argv[0], err)
	}
	pid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{})
	if err != nil {
		t.Fatalf("ForkExec(%q) = %v", argv, err)
	}
	return pid
}

// reapUntil calls reapAll, as SIGCHLD would, until done says the reaper has
// what the test waits for.
func reapUntil(t *testing.T, r *reaper, what string, done func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !done(); {
		if time.Now().After(deadline) {
			t.Fatalf("reaper: %s did not happen within 10s", what)
		}
		r.reapAll()
		time.Sleep(time.Millisecond)
	}
}

// TestReaper drives the reaper by hand (no SIGCHLD handler: the test is
// not PID 1), over this process's own children. Its tests must not run in
// parallel with others that start processes, since reapAll waits for any
// child.
func TestReaper(t *testing.T) {
	for _, tt := range []struct {
		name string
		argv []string
		want console.Status
	}{
		{"true", []string{"true"}, console.Status{}},
		{"exit 3", []string{"sh", "-c", "exit 3"}, console.Status{Code: 3}},
		{"killed", []string{"sh", "-c", "kill -KILL $$"}, console.Status{Signal: 9}},
	} {
		// The common case: await, then the exit.
		t.Run(tt.name+" awaited", func(t *testing.T) {
			r := &reaper{waiting: map[int]chan console.Status{}, early: map[int]earlyExit{}}
			pid := startChild(t, tt.argv...)
			ch := r.await(pid)
			var got console.Status
			reapUntil(t, r, "the exit of "+tt.name, func() bool {
				select {
				case got = <-ch:
					return true
				default:
					return false
				}
			})
			if got != tt.want {
				t.Errorf("<-await(%s) = %+v, want %+v", tt.name, got, tt.want)
			}
			if len(r.waiting) != 0 || len(r.early) != 0 {
				t.Errorf("reaper after %s: waiting %v, early %v, want both empty", tt.name, r.waiting, r.early)
			}
		})
		// A program that ends before its starter awaits it: the exit is
		// kept for the await.
		t.Run(tt.name+" early", func(t *testing.T) {
			r := &reaper{waiting: map[int]chan console.Status{}, early: map[int]earlyExit{}}
			pid := startChild(t, tt.argv...)
			reapUntil(t, r, "the early exit of "+tt.name, func() bool {
				r.mu.Lock()
				defer r.mu.Unlock()
				_, ok := r.early[pid]
				return ok
			})
			select {
			case got := <-r.await(pid):
				if got != tt.want {
					t.Errorf("<-await(%s) = %+v, want %+v", tt.name, got, tt.want)
				}
			default:
				t.Errorf("await(%s) after its exit was reaped blocks, want the status at once", tt.name)
			}
			if _, ok := r.early[pid]; ok {
				t.Errorf("reaper after await(%s) still keeps its early exit", tt.name)
			}
		})
	}
}

// TestReaperForgets checks that exits nobody awaits (orphans PID 1
// inherits) are dropped after earlyKept, so the map does not grow for ever.
func TestReaperForgets(t *testing.T) {
	now := time.Now()
	r := &reaper{waiting: map[int]chan console.Status{}, early: map[int]earlyExit{
		1 << 30:   {console.Status{Code: 1}, now.Add(-earlyKept - time.Second)},
		1<<30 + 1: {console.Status{Code: 2}, now},
	}}
	r.reapAll()
	if _, ok := r.early[1<<30]; ok {
		t.Errorf("reapAll() kept an exit older than %v", earlyKept)
	}
	if e, ok := r.early[1<<30+1]; !ok || e.st.Code != 2 {
		t.Errorf("reapAll() dropped a recent exit: early = %v", r.early)
	}
}
