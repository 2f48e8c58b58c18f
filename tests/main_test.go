// Package tests drives the real virt-sandbox binaries against the real
// libvirtd that tests/setup-host.sh installs and starts (make test runs it).
package tests

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// drivers are the URIs every acceptance test runs on.
var drivers = []string{"lxc:///", "qemu:///system"}

// testUser is an unprivileged caller that setup-host.sh creates.
const testUser = "sandbox-test"

var (
	binDir   string
	launcher string
	// imageCmd is the virt-sandbox-image command.
	imageCmd string
	// serviceCmd is the virt-sandbox-service command.
	serviceCmd string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "virt-sandbox-tests-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// The unprivileged caller runs these binaries too.
	os.Chmod(dir, 0o755)
	binDir = dir
	launcher = filepath.Join(dir, "virt-sandbox")
	serviceCmd = filepath.Join(dir, "virt-sandbox-service")
	imageCmd = filepath.Join(dir, "virt-sandbox-image")
	for _, b := range []struct {
		out, pkg string
		env      []string
	}{
		{"virt-sandbox", "./cmd/virt-sandbox", nil},
		{"virt-sandbox-service", "./cmd/virt-sandbox-service", nil},
		{"virt-sandbox-image", "./cmd/virt-sandbox-image", nil},
		{"virt-sandbox-init", "./init", []string{"CGO_ENABLED=0"}},
		{"virt-sandbox-virtiofsd", "./cmd/virt-sandbox-virtiofsd", nil},
	} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, b.out), b.pkg)
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), b.env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n%s", b.pkg, err, out)
			return 1
		}
	}
	before := leftovers()
	code := m.Run()
	stopRemoteHost()
	if after := leftovers(); len(after) > len(before) {
		fmt.Fprintf(os.Stderr, "FAIL: the tests left behind: %s\n", strings.Join(after, ", "))
		return 1
	}
	return code
}

// leftovers lists sandbox domains and state directories that exist now.
func leftovers() []string {
	var found []string
	for _, uri := range drivers {
		out, _ := exec.Command("virsh", "-q", "-c", uri, "list", "--all", "--name").Output()
		for _, name := range strings.Fields(string(out)) {
			// QEMU sandboxes restored from a template run as
			// the template's slot.
			if strings.HasPrefix(name, "sandbox-") || strings.HasPrefix(name, "virt-sandbox-tpl-") {
				found = append(found, uri+" domain "+name)
			}
		}
	}
	roots := []string{"/run/virt-sandbox"}
	for _, name := range []string{testUser, plainUser} {
		if u, err := user.Lookup(name); err == nil {
			roots = append(roots, filepath.Join(os.TempDir(), "virt-sandbox-"+u.Uid))
		}
	}
	for _, root := range roots {
		entries, _ := os.ReadDir(root)
		for _, e := range entries {
			found = append(found, "state dir "+filepath.Join(root, e.Name()))
		}
	}
	return found
}

// checkGone checks that the run named name left no state directory (with
// the temporary directories of its host-bind mounts) and no domain.
func checkGone(t *testing.T, uri, name string) {
	t.Helper()
	if _, err := os.Lstat(filepath.Join("/run/virt-sandbox", name)); err == nil {
		t.Errorf("state directory /run/virt-sandbox/%s left behind", name)
	}
	if domainExists(uri, name) {
		t.Errorf("domain %s left behind", name)
	}
}

// domainExists tells whether a domain of the sandbox name exists: named
// so, or, restored from a template, a template slot's titled so.
func domainExists(uri, name string) bool {
	out, _ := exec.Command("virsh", "-q", "-c", uri, "list", "--all", "--title").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && (f[1] == name || f[len(f)-1] == name) {
			return true
		}
	}
	return false
}

// uniqueName is a sandbox name of its own for one run of a test.
func uniqueName(prefix string) string {
	return fmt.Sprintf("sandbox-%s-%d", prefix, time.Now().UnixNano()%1e9)
}

// result is how a launcher run ended.
type result struct {
	stdout, stderr string
	code           int
	elapsed        time.Duration
}

// opts tune a launcher run.
type opts struct {
	stdin io.Reader
	// asUser runs the launcher as the unprivileged test user.
	asUser bool
	dir    string
	env    []string
	// timeout bounds the run; the test fails when it is exceeded.
	timeout time.Duration
}

// sandbox runs the launcher with args and returns how it ended.
func sandbox(t *testing.T, o opts, args ...string) result {
	t.Helper()
	if o.timeout == 0 {
		o.timeout = 3 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, launcher, withColdBoot(args)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = o.stdin, &stdout, &stderr
	cmd.Dir = o.dir
	cmd.Env = append(os.Environ(), o.env...)
	if o.asUser {
		u := lookupUser(t)
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: libvirtGroup(t)}}
		cmd.Env = append(cmd.Env, "HOME="+u.HomeDir, "USER="+testUser, "XDG_RUNTIME_DIR=", "XDG_CACHE_HOME=")
		if o.dir == "" {
			cmd.Dir = u.HomeDir
		}
	}
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String(), elapsed: time.Since(start), code: cmd.ProcessState.ExitCode()}
	// Errorf, not Fatalf: tests call this from goroutines too.
	if ctx.Err() != nil {
		t.Errorf("virt-sandbox %q did not end within %v; stderr:\n%s", args, o.timeout, r.stderr)
	} else if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Errorf("virt-sandbox %q: %v", args, err)
	}
	return r
}

// coldBoot runs the tests' QEMU sandboxes with --cold-boot instead of from
// templates: VIRT_SANDBOX_TEST_COLD_BOOT=1 runs the suite on that path.
var coldBoot = os.Getenv("VIRT_SANDBOX_TEST_COLD_BOOT") == "1"

// withColdBoot adds --cold-boot to a launcher's QEMU args when coldBoot.
func withColdBoot(args []string) []string {
	if coldBoot && !slices.Contains(args, "--cold-boot") && slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "qemu:") }) {
		return append([]string{"--cold-boot"}, args...)
	}
	return args
}

func lookupUser(t *testing.T) *user.User {
	t.Helper()
	u, err := user.Lookup(testUser)
	if err != nil {
		t.Fatalf("user %s (made by tests/setup-host.sh): %v", testUser, err)
	}
	return u
}

func libvirtGroup(t *testing.T) []uint32 {
	g, err := user.LookupGroup("libvirt")
	if err != nil {
		t.Fatalf("group libvirt: %v", err)
	}
	gid, _ := strconv.Atoi(g.Gid)
	return []uint32{uint32(gid)}
}

// onEachDriver runs f as a parallel subtest per driver.
func onEachDriver(t *testing.T, f func(t *testing.T, uri string)) {
	for _, uri := range drivers {
		t.Run(driverName(uri), func(t *testing.T) {
			t.Parallel()
			f(t, uri)
		})
	}
}

func driverName(uri string) string {
	name, _, _ := strings.Cut(uri, ":")
	return name
}

// want checks a run's exit status and output.
func (r result) want(t *testing.T, code int, stdout string) {
	t.Helper()
	if r.code != code || r.stdout != stdout {
		t.Errorf("exit %d, stdout %q; want exit %d, stdout %q; stderr:\n%s", r.code, r.stdout, code, stdout, r.stderr)
	}
}

// hostDir is a temporary directory the sandboxes see: t.TempDir is under
// /tmp, which every sandbox has a private one of.
func hostDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "virt-sandbox-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	return dir
}
