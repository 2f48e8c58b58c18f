package tests

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
)

// counter is a service program that prints a numbered line every 0.1 s.
const counter = `i=0; while :; do i=$((i+1)); echo "line $i"; sleep 0.1; done`

// caller is who runs virt-sandbox-service: root, whose services live in
// /etc/virt-sandbox/services, or the test user with a private session
// libvirtd (see startSession).
type caller struct {
	cred *syscall.Credential
	// env replaces the environment when set.
	env []string
	dir string
	// servicesDir and logDir are where this caller's services keep their
	// configs and logs.
	servicesDir, logDir string
	// ready is called before a service is removed at the end of a test.
	ready func(t *testing.T)
}

var rootCaller = &caller{servicesDir: "/etc/virt-sandbox/services", logDir: "/var/log/virt-sandbox"}

// svc runs virt-sandbox-service with args and returns how it ended.
func (c *caller) svc(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := c.command(ctx, serviceCmd, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String(), elapsed: time.Since(start), code: cmd.ProcessState.ExitCode()}
	if ctx.Err() != nil {
		t.Errorf("virt-sandbox-service %q did not end within 2 minutes; stderr:\n%s", args, r.stderr)
	} else if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Errorf("virt-sandbox-service %q: %v", args, err)
	}
	return r
}

// command is name with args as c, in c's directory and environment.
func (c *caller) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = c.dir
	if c.env != nil {
		cmd.Env = c.env
	}
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	return cmd
}

// ok runs virt-sandbox-service and fails the test unless it exits 0 with
// stdout want.
func (c *caller) ok(t *testing.T, want string, args ...string) {
	t.Helper()
	if r := c.svc(t, args...); r.code != 0 || r.stdout != want {
		t.Fatalf("virt-sandbox-service %q: exit %d, stdout %q; want 0, %q; stderr:\n%s", args, r.code, r.stdout, want, r.stderr)
	}
}

// virsh runs virsh as c.
func (c *caller) virsh(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := c.command(ctx, "virsh", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Errorf("virsh %q: %v: %s", args, err, stderr.String())
	}
	return string(out)
}

// domains lists the domains of uri, running or not.
func (c *caller) domains(t *testing.T, uri string) []string {
	t.Helper()
	return strings.Fields(c.virsh(t, "-q", "-c", uri, "list", "--all", "--name"))
}

// configPath is where a service's config is saved.
func (c *caller) configPath(name string) string {
	return filepath.Join(c.servicesDir, name, "sandbox.json")
}

// serviceName is a fresh service name: tests run in parallel, and other runs
// of them may run on the same host.
func serviceName(t *testing.T, tag string) string {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "svc-test-" + tag + "-" + hex.EncodeToString(b)
}

// newService creates a service on uri running argv and removes it, checking
// that nothing of it is left, when the test ends.
func newService(t *testing.T, c *caller, uri, tag string, options []string, argv ...string) string {
	t.Helper()
	name := serviceName(t, tag)
	t.Cleanup(func() { c.remove(t, uri, name) })
	args := append(append([]string{"create", name, "-c", uri}, options...), "--")
	c.ok(t, "", append(args, argv...)...)
	return name
}

// remove deletes a service, whatever its state, and checks that its domain,
// config and log are gone.
func (c *caller) remove(t *testing.T, uri, name string) {
	t.Helper()
	if c.ready != nil {
		c.ready(t)
	}
	if r := c.svc(t, "delete", "--force", name); r.code != 0 && !strings.Contains(r.stderr, "no such service") {
		t.Errorf("delete --force %s: exit %d; stderr:\n%s", name, r.code, r.stderr)
	}
	if slices.Contains(c.domains(t, uri), name) {
		t.Errorf("the domain %s is left on %s after delete --force; removing it", name, uri)
		c.virsh(t, "-c", uri, "destroy", name)
		c.virsh(t, "-c", uri, "undefine", name)
	}
	for _, dir := range []string{filepath.Join(c.servicesDir, name), filepath.Join(c.logDir, name)} {
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("%s is left after delete --force", dir)
			os.RemoveAll(dir)
		}
	}
	var left []string
	for _, d := range c.domains(t, uri) {
		if strings.HasPrefix(d, name) {
			left = append(left, d)
		}
	}
	if len(left) > 0 {
		t.Errorf("domains left on %s: %v", uri, left)
	}
	// What libvirt keeps of a domain it ran, where this caller sees it.
	leftovers, _ := filepath.Glob(filepath.Join("/run/libvirt/lxc", name+".*"))
	logs, _ := filepath.Glob(filepath.Join("/var/log/libvirt/*", name+".log"))
	if left := append(leftovers, logs...); len(left) > 0 && c.cred == nil {
		t.Errorf("libvirt's files of %s left after delete --force: %v", name, left)
	}
}

// wantStatus checks that status reports state.
func (c *caller) wantStatus(t *testing.T, name, state string) {
	t.Helper()
	c.ok(t, name+": "+state+"\n", "status", name)
}

// waitStatus waits up to timeout for status to report state.
func (c *caller) waitStatus(t *testing.T, name, state string, timeout time.Duration) {
	t.Helper()
	var r result
	for end := time.Now().Add(timeout); time.Now().Before(end); time.Sleep(300 * time.Millisecond) {
		if r = c.svc(t, "status", name); r.code == 0 && r.stdout == name+": "+state+"\n" {
			return
		}
	}
	t.Fatalf("status %s after %v: exit %d, %q, stderr %q; want %q", name, timeout, r.code, r.stdout, r.stderr, state)
}

// logs is what logs prints for the service now.
func (c *caller) logs(t *testing.T, name string) string {
	t.Helper()
	r := c.svc(t, "logs", name)
	if r.code != 0 {
		t.Fatalf("logs %s: exit %d; stderr:\n%s", name, r.code, r.stderr)
	}
	return r.stdout
}

// waitLog polls the service's log for up to timeout until done says it is
// complete, and returns it.
func (c *caller) waitLog(t *testing.T, name string, timeout time.Duration, what string, done func(log string) bool) string {
	t.Helper()
	var log string
	for end := time.Now().Add(timeout); time.Now().Before(end); time.Sleep(300 * time.Millisecond) {
		if log = c.logs(t, name); done(log) {
			return log
		}
	}
	t.Fatalf("the log of %s does not show %s after %v; it is:\n%s", name, what, timeout, tail(log, 40))
	return ""
}

func tail(s string, lines int) string {
	l := strings.SplitAfter(s, "\n")
	if len(l) > lines {
		l = append([]string{fmt.Sprintf("[%d lines before]\n", len(l)-lines)}, l[len(l)-lines:]...)
	}
	return strings.Join(l, "")
}

// firstLines is what counter prints first.
const firstLines = "line 1\nline 2\nline 3\n"

// wantListed checks that list --json shows the service.
func (c *caller) wantListed(t *testing.T, name, uri, state string, argv ...string) {
	t.Helper()
	for _, s := range listServices(t, c) {
		if s.Name == name {
			if s.URI != uri || s.State != state || !slices.Equal(s.Command, argv) {
				t.Errorf("list --json shows %+v; want uri %s, state %s, command %q", s, uri, state, argv)
			}
			return
		}
	}
	t.Errorf("list --json does not show %s", name)
}

// listedService is a service as list --json shows it.
type listedService struct {
	Name, URI, State string
	Command          []string
	Addresses        []string
}

// listServices runs list --json as c.
func listServices(t *testing.T, c *caller) []listedService {
	t.Helper()
	r := c.svc(t, "list", "--json")
	var list []listedService
	if err := json.Unmarshal([]byte(r.stdout), &list); r.code != 0 || err != nil {
		t.Fatalf("list --json: exit %d, %v; stdout:\n%s\nstderr:\n%s", r.code, err, r.stdout, r.stderr)
	}
	return list
}

// TestServiceLifecycle takes a service through create, start, logs,
// execute, connect, stop, an edited config and upgrade, start again (its log
// kept), stop and delete, on each driver.
func TestServiceLifecycle(t *testing.T) {
	onEachDriver(t, func(t *testing.T, uri string) {
		c := rootCaller
		argv := []string{"/bin/sh", "-c", counter}
		name := newService(t, c, uri, driverName(uri), nil, argv...)
		c.wantStatus(t, name, "stopped")
		c.wantListed(t, name, uri, "stopped", argv...)

		c.ok(t, "", "start", name)
		c.wantStatus(t, name, "running")
		c.wantListed(t, name, uri, "running", argv...)
		c.waitLog(t, name, time.Minute, `"line 3"`, func(l string) bool { return strings.Contains(l, "line 3\n") })

		t.Run("execute", func(t *testing.T) { testExecute(t, c, name) })
		t.Run("connect", func(t *testing.T) { testConnect(t, c, name) })

		c.ok(t, "", "stop", name)
		c.wantStatus(t, name, "stopped")
		first := c.logs(t, name)
		if !strings.Contains(first, firstLines) {
			t.Errorf("the first run's log does not have %q:\n%s", firstLines, tail(first, 20))
		}

		// The images the upgrade adds must outlive its subtest.
		images := hostDir(t)
		t.Run("upgrade", func(t *testing.T) { testUpgrade(t, c, uri, name, images) })

		c.ok(t, "", "start", name)
		c.wantStatus(t, name, "running")
		// The second run counts from 1 again, after what the first printed.
		c.waitLog(t, name, time.Minute, "the first run's lines, then the second's from 1 to 3", func(l string) bool {
			rest, ok := strings.CutPrefix(l, first)
			return ok && strings.Contains(rest, firstLines)
		})
		c.ok(t, "", "stop", name)
		c.wantStatus(t, name, "stopped")

		c.ok(t, "", "delete", name)
		checkRefused(t, c.svc(t, "status", name), "no such service")
		for _, dir := range []string{filepath.Join(c.servicesDir, name), filepath.Join(c.logDir, name)} {
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s after delete: %v; want it gone", dir, err)
			}
		}
		if slices.Contains(c.domains(t, uri), name) {
			t.Errorf("the domain %s is still defined after delete", name)
		}
	})
}

// testExecute runs a second command in the running service.
func testExecute(t *testing.T, c *caller, name string) {
	r := c.svc(t, "execute", name, "--", "/bin/sh", "-c", "echo out; echo err >&2; exit 7")
	if r.code != 7 || r.stdout != "out\n" || r.stderr != "err\n" {
		t.Errorf("execute: exit %d, stdout %q, stderr %q; want 7, %q, %q", r.code, r.stdout, r.stderr, "out\n", "err\n")
	}
	c.wantStatus(t, name, "running")
}

// testConnect attaches to the running service on a pty, sees its output and
// detaches with Ctrl-]; the service keeps running.
func testConnect(t *testing.T, c *caller, name string) {
	cmd := c.command(context.Background(), serviceCmd, "connect", name)
	f, err := pty.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var mu sync.Mutex
	var out bytes.Buffer
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := f.Read(b)
			mu.Lock()
			out.Write(b[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	output := func() string { mu.Lock(); defer mu.Unlock(); return out.String() }
	lineRE := regexp.MustCompile(`line [0-9]+\r?\n`)
	// Two of the program's lines, so that it is the live output.
	for end := time.Now().Add(time.Minute); len(lineRE.FindAllString(output(), -1)) < 2; time.Sleep(100 * time.Millisecond) {
		select {
		case <-exited:
			t.Fatalf("connect ended (exit %d) before the service's output arrived; it printed:\n%q", cmd.ProcessState.ExitCode(), output())
		default:
		}
		if time.Now().After(end) {
			cmd.Process.Kill()
			<-exited
			t.Fatalf("connect shows no lines of the service within a minute; it printed:\n%q", tail(output(), 20))
		}
	}
	if _, err := f.Write([]byte{0x1d}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if code := cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("connect after Ctrl-]: exit %d, want 0; it printed:\n%q", code, tail(output(), 20))
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-exited
		t.Fatalf("connect did not end within 10 s of Ctrl-]; it printed:\n%q", tail(output(), 20))
	}
	c.wantStatus(t, name, "running")
	// The program still runs and writes.
	n := len(c.logs(t, name))
	c.waitLog(t, name, 30*time.Second, "new lines after connect detached", func(l string) bool { return len(l) > n })
}

// testUpgrade gives the stopped service 768 MiB in its saved config and
// rebuilds its domain from it. The edited config is also made an older
// build's (schema version 1, no resolved part), which start refuses and
// upgrade rewrites.
func testUpgrade(t *testing.T, c *caller, uri, name, dir string) {
	path := c.configPath(name)
	dec := json.NewDecoder(strings.NewReader(fileText(t, path)))
	dec.UseNumber()
	var cfg map[string]any
	if err := dec.Decode(&cfg); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	kernel, _ := cfg["kernel"].(map[string]any)
	if kernel == nil {
		kernel = map[string]any{}
		cfg["kernel"] = kernel
	}
	kernel["memory_mib"] = 768
	cfg["version"] = 1
	delete(cfg, "resolved")
	// A hand-added image mount and disk carry no format or filesystem:
	// upgrade finds them as create does.
	cfg["mounts"] = append(asList(cfg["mounts"]), map[string]any{"type": "host-image", "target": "/mnt/hand", "source": ext4Image(t, dir, "mount.img", "hand-added"), "readonly": true})
	if driverName(uri) == "qemu" {
		// LXC services take no disks.
		cfg["disks"] = append(asList(cfg["disks"]), map[string]any{"tag": "hand", "source": ext4Image(t, dir, "disk.img", "")})
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := c.svc(t, "start", name); r.code != 125 || !strings.Contains(r.stderr, "schema version 1") || !strings.Contains(r.stderr, "upgrade "+name) {
		t.Errorf("start of a service with a version 1 config = %d, %q; want 125 and an error that names upgrade", r.code, r.stderr)
	}
	c.wantStatus(t, name, "stopped")
	c.ok(t, "", "upgrade", name)
	xml := c.virsh(t, "-c", uri, "dumpxml", name)
	if !strings.Contains(xml, "<memory unit='KiB'>786432</memory>") {
		t.Errorf("dumpxml %s after upgrade does not give it 786432 KiB:\n%s", name, xml)
	}
	saved := fileText(t, path)
	var run struct {
		Version  int               `json:"version"`
		Mounts   []json.RawMessage `json:"mounts"`
		Resolved struct {
			MountFS map[int]string `json:"mount_fs"`
		} `json:"resolved"`
	}
	if err := json.Unmarshal([]byte(saved), &run); err != nil {
		t.Fatal(err)
	}
	if run.Version != 2 {
		t.Errorf("the saved config after upgrade is of schema version %d, want 2", run.Version)
	}
	if hand := len(run.Mounts) - 1; run.Resolved.MountFS[hand] != "ext4" {
		t.Errorf("the saved config after upgrade has no filesystem for the hand-added image (mount %d):\n%s", hand, saved)
	}
}

// asList is a JSON list, or an empty one.
func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

// TestServiceRestartPolicy: on-failure:N restarts a failing program N times
// and then lets the service stop; a program that succeeds is not restarted.
func TestServiceRestartPolicy(t *testing.T) {
	t.Parallel()
	c := rootCaller
	t.Run("on-failure:2", func(t *testing.T) {
		t.Parallel()
		name := newService(t, c, "lxc:///", "fail", []string{"--restart", "on-failure:2"}, "/bin/sh", "-c", "echo attempt; exit 1")
		c.ok(t, "", "start", name)
		attempts := func(l string) int { return strings.Count("\n"+l, "\nattempt\n") }
		c.waitLog(t, name, 20*time.Second, `"attempt" 3 times and that it is not restarting`, func(l string) bool {
			return attempts(l) >= 3 && strings.Contains(l, "not restarting")
		})
		c.waitStatus(t, name, "stopped", 20*time.Second)
		log := c.logs(t, name)
		if attempts(log) != 3 {
			t.Errorf("the program ran %d times, want 3 (first run and 2 restarts); the log:\n%s", attempts(log), log)
		}
		if i, j := strings.LastIndex(log, "\nattempt\n"), strings.Index(log, "not restarting"); j < i {
			t.Errorf("the log says it is not restarting before the last attempt:\n%s", log)
		}
	})
	t.Run("on-failure, success", func(t *testing.T) {
		t.Parallel()
		name := newService(t, c, "lxc:///", "succeed", []string{"--restart", "on-failure"}, "/bin/sh", "-c", "echo done; exit 0")
		c.ok(t, "", "start", name)
		c.waitStatus(t, name, "stopped", 20*time.Second)
		log := c.logs(t, name)
		if n := strings.Count("\n"+log, "\ndone\n"); n != 1 || strings.Contains(log, "restarting in") {
			t.Errorf("a program that exits 0 ran %d times, want once and no restart; the log:\n%s", n, log)
		}
	})
}

// TestServiceBadInput: each bad input exits 125 with one line and changes
// nothing.
func TestServiceBadInput(t *testing.T) {
	t.Parallel()
	c := rootCaller
	const uri = "lxc:///"
	name := newService(t, c, uri, "bad", nil, "/bin/sh", "-c", counter)
	c.ok(t, "", "start", name)
	c.wantStatus(t, name, "running")
	c.waitLog(t, name, time.Minute, `"line 1"`, func(l string) bool { return strings.Contains(l, "line 1\n") })
	cfg := fileText(t, c.configPath(name))
	xml := c.virsh(t, "-c", uri, "dumpxml", "--inactive", name)
	unchanged := func(t *testing.T) {
		t.Helper()
		if got := fileText(t, c.configPath(name)); got != cfg {
			t.Errorf("%s changed from\n%s\nto\n%s", c.configPath(name), cfg, got)
		}
		if got := c.virsh(t, "-c", uri, "dumpxml", "--inactive", name); got != xml {
			t.Errorf("the domain %s changed from\n%s\nto\n%s", name, xml, got)
		}
		c.wantStatus(t, name, "running")
		if _, err := os.Stat(filepath.Join(c.logDir, name, "program.log")); err != nil {
			t.Errorf("the log of %s: %v", name, err)
		}
	}
	nothingNamed := func(t *testing.T, other string) {
		t.Helper()
		if _, err := os.Stat(filepath.Join(c.servicesDir, other)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v; want nothing there", filepath.Join(c.servicesDir, other), err)
		}
		if _, err := os.Stat(filepath.Join(c.logDir, other)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v; want nothing there", filepath.Join(c.logDir, other), err)
		}
		for _, u := range drivers {
			if slices.Contains(c.domains(t, u), other) {
				t.Errorf("a domain %s is defined on %s", other, u)
			}
		}
	}

	t.Run("create with a taken name", func(t *testing.T) {
		checkRefused(t, c.svc(t, "create", name, "-c", uri, "--", "/bin/true"), strconv.Quote(name))
		unchanged(t)
	})
	t.Run("create with a name taken on another driver", func(t *testing.T) {
		checkRefused(t, c.svc(t, "create", name, "-c", "qemu:///system", "--", "/bin/true"), strconv.Quote(name))
		unchanged(t)
		if slices.Contains(c.domains(t, "qemu:///system"), name) {
			t.Errorf("a domain %s is defined on qemu:///system", name)
		}
	})
	t.Run("start of an unknown service", func(t *testing.T) {
		unknown := serviceName(t, "unknown")
		checkRefused(t, c.svc(t, "start", unknown), "no such service")
		nothingNamed(t, unknown)
	})
	t.Run("delete of a running service without --force", func(t *testing.T) {
		checkRefused(t, c.svc(t, "delete", name), "running")
		unchanged(t)
	})
	t.Run("restart sometimes", func(t *testing.T) {
		other := serviceName(t, "sometimes")
		checkRefused(t, c.svc(t, "create", other, "-c", uri, "--restart", "sometimes", "--", "/bin/true"), `"sometimes"`)
		nothingNamed(t, other)
	})
}

// TestServiceSystemdUnit: the unit systemd-unit prints passes
// systemd-analyze verify and starts and stops the service with this tool.
func TestServiceSystemdUnit(t *testing.T) {
	t.Parallel()
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("systemd-analyze is needed to check the generated unit (Debian package systemd): %v", err)
	}
	c := rootCaller
	name := newService(t, c, "lxc:///", "unit", nil, "/bin/true")
	r := c.svc(t, "systemd-unit", name)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("systemd-unit %s: exit %d; stderr:\n%s", name, r.code, r.stderr)
	}
	for _, want := range []string{
		"\nExecStart=" + serviceCmd + " start " + name + "\n",
		"\nExecStop=" + serviceCmd + " stop " + name + "\n",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("the unit has no line %q:\n%s", strings.TrimSpace(want), r.stdout)
		}
	}
	file := filepath.Join(t.TempDir(), "virt-sandbox-"+name+".service")
	if err := os.WriteFile(file, []byte(r.stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", file).CombinedOutput()
	var complaints []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		// A host without libvirt's unit files has no libvirtd.service for
		// Requires= and After= to name: not the unit's fault.
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.Contains(l, "libvirtd.service") {
			complaints = append(complaints, l)
		}
	}
	if len(complaints) > 0 || (err != nil && len(out) == 0) {
		t.Errorf("systemd-analyze verify %s: %v\n%s\nthe unit:\n%s", file, err, out, r.stdout)
	} else if err != nil {
		t.Logf("systemd-analyze verify only misses libvirtd.service on this host: %s", out)
	}
}

// TestServiceAutostart: autostart turns libvirt's autostart of the service
// on and off.
func TestServiceAutostart(t *testing.T) {
	t.Parallel()
	c := rootCaller
	name := newService(t, c, "lxc:///", "autostart", nil, "/bin/true")
	autostart := func() bool {
		t.Helper()
		r := c.svc(t, "list", "--json")
		var list []struct {
			Name      string
			Autostart bool
		}
		if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
			t.Fatalf("list --json: %v; stdout:\n%s\nstderr:\n%s", err, r.stdout, r.stderr)
		}
		for _, s := range list {
			if s.Name == name {
				return s.Autostart
			}
		}
		t.Fatalf("list --json does not show %s:\n%s", name, r.stdout)
		return false
	}
	if autostart() {
		t.Errorf("a new service autostarts")
	}
	c.ok(t, "", "autostart", name, "on")
	if !autostart() {
		t.Errorf("autostart on: list says it does not autostart")
	}
	c.ok(t, "", "autostart", name, "off")
	if autostart() {
		t.Errorf("autostart off: list says it autostarts")
	}
	checkRefused(t, c.svc(t, "autostart", name, "sometimes"), "on|off")
}

// session is the test user with a libvirtd of its own, so that the test can
// restart it without disturbing the system libvirtd other tests use.
type session struct {
	*caller
	runtimeDir string
	daemonLog  string
	daemon     *exec.Cmd
	exited     chan struct{}
	uid        int
}

// startSession starts a session libvirtd as the test user, with a fresh
// home, runtime, config, cache and state directory, and stops it when the
// test ends.
func startSession(t *testing.T) *session {
	u := lookupUser(t)
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	// libvirt puts the domain's channel sockets under XDG_CONFIG_HOME, and
	// a UNIX socket path has at most 107 bytes: keep the paths short.
	base, err := os.MkdirTemp("/var/tmp", "vs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	dirs := map[string]string{}
	for d, short := range map[string]string{"home": "h", "run": "r", "config": "c", "cache": "k", "state": "s"} {
		dirs[d] = filepath.Join(base, short)
		if err := os.Mkdir(dirs[d], 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dirs[d], uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	s := &session{
		caller: &caller{
			cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: libvirtGroup(t)},
			dir:  dirs["home"],
			env: []string{
				"PATH=" + os.Getenv("PATH"),
				"HOME=" + dirs["home"],
				"USER=" + testUser,
				"LOGNAME=" + testUser,
				"XDG_RUNTIME_DIR=" + dirs["run"],
				"XDG_CONFIG_HOME=" + dirs["config"],
				"XDG_CACHE_HOME=" + dirs["cache"],
				"XDG_STATE_HOME=" + dirs["state"],
				// The test starts and stops libvirtd; the clients must not
				// start one of their own when it is down.
				"LIBVIRT_AUTOSTART=0",
			},
			servicesDir: filepath.Join(dirs["config"], "virt-sandbox", "services"),
			logDir:      filepath.Join(dirs["state"], "virt-sandbox"),
		},
		runtimeDir: dirs["run"],
		daemonLog:  filepath.Join(base, "libvirtd.log"),
		uid:        uid,
	}
	s.ready = s.ensureDaemon
	t.Cleanup(func() { s.stopAll(t) })
	s.startDaemon(t)
	return s
}

func (s *session) socket() string { return filepath.Join(s.runtimeDir, "libvirt", "libvirt-sock") }

// startDaemon starts libvirtd and waits until it listens.
func (s *session) startDaemon(t *testing.T) {
	t.Helper()
	log, err := os.OpenFile(s.daemonLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := s.command(context.Background(), "libvirtd")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting libvirtd: %v", err)
	}
	s.daemon, s.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) { cmd.Wait(); close(exited) }(s.exited)
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if conn, err := net.Dial("unix", s.socket()); err == nil {
			conn.Close()
			return
		}
		select {
		case <-s.exited:
			t.Fatalf("libvirtd ended (%v) before it listened on %s; its log:\n%s", cmd.ProcessState, s.socket(), tail(fileText(t, s.daemonLog), 30))
		default:
		}
		if time.Now().After(end) {
			t.Fatalf("libvirtd does not listen on %s after 30 s; its log:\n%s", s.socket(), tail(fileText(t, s.daemonLog), 30))
		}
	}
}

// stopDaemon ends libvirtd with SIGTERM, or SIGKILL if it does not end.
func (s *session) stopDaemon(t *testing.T) {
	t.Helper()
	if s.daemon == nil {
		return
	}
	s.daemon.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(15 * time.Second):
		t.Errorf("libvirtd did not end within 15 s of SIGTERM; killing it")
		s.daemon.Process.Kill()
		<-s.exited
	}
	s.daemon = nil
}

func (s *session) ensureDaemon(t *testing.T) {
	if s.daemon == nil {
		s.startDaemon(t)
	}
}

// stopAll stops libvirtd, and what it started that outlives it: virtlogd and
// any QEMU left.
func (s *session) stopAll(t *testing.T) {
	s.stopDaemon(t)
	if t.Failed() {
		if b, err := os.ReadFile(s.daemonLog); err == nil {
			t.Logf("the session libvirtd's log:\n%s", tail(string(b), 40))
		}
	}
	pids, _ := filepath.Glob(filepath.Join(s.runtimeDir, "libvirt", "qemu", "run", "*.pid"))
	for _, p := range pids {
		if s.endProcess(t, p, "qemu") {
			t.Errorf("a QEMU of the session (%s) was still running", p)
		}
	}
	s.endProcess(t, filepath.Join(s.runtimeDir, "libvirt", "virtlogd.pid"), "virtlogd")
}

// endProcess ends the test user's process named in pidFile if its command
// name starts with comm, and says whether there was one.
func (s *session) endProcess(t *testing.T, pidFile, comm string) bool {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return false
	}
	proc := fmt.Sprintf("/proc/%d", pid)
	name, err := os.ReadFile(proc + "/comm")
	var st syscall.Stat_t
	if err != nil || !strings.HasPrefix(string(name), comm) || syscall.Stat(proc, &st) != nil || int(st.Uid) != s.uid {
		return false
	}
	syscall.Kill(pid, syscall.SIGTERM)
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(proc); err != nil {
			return true
		}
		if b, _ := os.ReadFile(proc + "/stat"); strings.Contains(string(b), ") Z ") {
			return true
		}
	}
	syscall.Kill(pid, syscall.SIGKILL)
	return true
}

// TestServiceSessionDaemonRestart: a qemu:///session service outlives a
// restart of its libvirtd, stopped and running.
func TestServiceSessionDaemonRestart(t *testing.T) {
	t.Parallel()
	s := startSession(t)
	const uri = "qemu:///session"
	argv := []string{"/bin/sh", "-c", counter}
	name := newService(t, s.caller, uri, "session", nil, argv...)
	s.wantListed(t, name, uri, "stopped", argv...)
	cfg := fileText(t, s.configPath(name))

	restart := func() {
		t.Helper()
		s.stopDaemon(t)
		// The clients do not start a libvirtd of their own.
		checkRefused(t, s.svc(t, "status", name), s.socket())
		s.startDaemon(t)
	}
	restart()
	s.wantStatus(t, name, "stopped")
	s.wantListed(t, name, uri, "stopped", argv...)
	if got := fileText(t, s.configPath(name)); got != cfg {
		t.Errorf("%s changed across the libvirtd restart, from\n%s\nto\n%s", s.configPath(name), cfg, got)
	}

	s.ok(t, "", "start", name)
	s.wantStatus(t, name, "running")
	log := s.waitLog(t, name, 90*time.Second, `"line 3"`, func(l string) bool { return strings.Contains(l, "line 3\n") })

	// A running service keeps running while libvirtd restarts, and is still
	// under its control afterwards.
	restart()
	s.wantStatus(t, name, "running")
	s.waitLog(t, name, 30*time.Second, "new lines after the libvirtd restart", func(l string) bool {
		return len(l) > len(log) && strings.HasPrefix(l, log)
	})
	s.ok(t, "", "stop", name)
	s.wantStatus(t, name, "stopped")
	s.ok(t, "", "delete", name)
	checkRefused(t, s.svc(t, "status", name), "no such service")
	if slices.Contains(s.domains(t, uri), name) {
		t.Errorf("the domain %s is still defined after delete", name)
	}
}

func fileText(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestServiceSessionsAtOnce: a service serves sessions side by side: an
// execute that can only end once another has run, as many executes as it
// has session channels, one more refused with one line, and a stop while
// a long execute runs.
func TestServiceSessionsAtOnce(t *testing.T) {
	onEachDriver(t, func(t *testing.T, uri string) {
		c := rootCaller
		name := newService(t, c, uri, "sessions", nil, "/bin/sh", "-c", "while :; do sleep 1; done")
		c.ok(t, "", "start", name)
		c.waitStatus(t, name, "running", time.Minute)

		// The first waits for a file only the second makes: they must
		// overlap. A fourth and a fifth wait for the same file too.
		const waiter = "echo waiting; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo went"
		var waiters []*exec.Cmd
		var outs []*bytes.Buffer
		for range 3 {
			cmd := c.command(context.Background(), serviceCmd, "execute", name, "--", "/bin/sh", "-c", waiter)
			out, _ := cmd.StdoutPipe()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			r := bufio.NewReader(out)
			if line, _ := r.ReadString('\n'); line != "waiting\n" {
				t.Fatalf("an execute printed %q, want waiting", line)
			}
			rest := new(bytes.Buffer)
			go io.Copy(rest, r)
			waiters, outs = append(waiters, cmd), append(outs, rest)
		}
		// All session channels but one are held: this one gets it, the
		// one after is refused.
		hold := c.command(context.Background(), serviceCmd, "execute", name, "--", "/bin/sh", "-c", "echo holding; read x")
		holdIn, _ := hold.StdinPipe()
		holdOut, _ := hold.StdoutPipe()
		if err := hold.Start(); err != nil {
			t.Fatal(err)
		}
		defer hold.Process.Kill()
		if line, _ := bufio.NewReader(holdOut).ReadString('\n'); line != "holding\n" {
			t.Fatalf("the fourth execute printed %q, want holding", line)
		}
		checkRefused(t, c.svc(t, "execute", name, "--", "/bin/true"), "sessions (execute, stop) under way")
		holdIn.Write([]byte("\n"))
		hold.Wait()
		c.ok(t, "", "execute", name, "--", "/bin/touch", "/tmp/go")
		for i, cmd := range waiters {
			if err := cmd.Wait(); err != nil || outs[i].String() != "went\n" {
				t.Errorf("a waiting execute: %v, rest of its output %q; want exit 0, %q", err, outs[i], "went\n")
			}
		}

		// A stop while an execute runs stops the service; the execute
		// ends with it.
		long := c.command(context.Background(), serviceCmd, "execute", name, "--", "/bin/sh", "-c", "echo long; exec sleep 600")
		longOut, _ := long.StdoutPipe()
		if err := long.Start(); err != nil {
			t.Fatal(err)
		}
		defer long.Process.Kill()
		if line, _ := bufio.NewReader(longOut).ReadString('\n'); line != "long\n" {
			t.Fatalf("the long execute printed %q, want long", line)
		}
		c.ok(t, "", "stop", name)
		c.wantStatus(t, name, "stopped")
		done := make(chan error, 1)
		go func() { done <- long.Wait() }()
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Errorf("the long execute did not end within a minute of the stop")
		}
	})
}

// TestServiceOriginalSyntax: libvirt-sandbox's users write the connection
// before the subcommand; create takes it from there.
func TestServiceOriginalSyntax(t *testing.T) {
	t.Parallel()
	c := rootCaller
	name := serviceName(t, "syntax")
	t.Cleanup(func() { c.remove(t, "qemu:///system", name) })
	c.ok(t, "", "-c", "qemu:///system", "create", name, "--", "/bin/true")
	c.wantListed(t, name, "qemu:///system", "stopped", "/bin/true")
	c.ok(t, name+": stopped\n", "--connect", "qemu:///system", "status", name)
}
