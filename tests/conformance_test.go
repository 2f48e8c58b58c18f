package tests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"
)

// conformancePackages are the standard library packages whose own tests
// TestConformance runs in each sandbox and on the host: together they use
// what a program expects of its system (files, directories and links,
// processes and their credentials, signals, clocks and timers, users,
// sockets).
var conformancePackages = []string{"os", "os/exec", "os/signal", "path/filepath", "time", "io/fs", "os/user", "net"}

// privilegedPackages run with -p --userns off when the host run is root's:
// their tests take uid 0 to mean root's capabilities (syscall's
// TestSetuidEtc calls setresuid and setgroups), and a sandbox's program is
// the caller's uid without capabilities unless -p.
var privilegedPackages = []string{"syscall"}

// conformanceFlags run the short variants: the long ones add minutes under
// TCG and net's external-network tests, which -short skips, fail without a
// network on the host as much as in a sandbox.
var conformanceFlags = []string{"-short", "-count=1", "-json"}

// knownDifference is a test whose verdict in a sandbox differs from the
// host's for a reason the sandbox cannot remove.
type knownDifference struct {
	// verdict is the sandbox's: "pass", "fail" or "skip".
	verdict string
	// drivers are those it differs on; none means all.
	drivers []string
	why     string
}

// knownDifferences are all the differences TestConformance accepts, keyed
// by "package TestName". README.md's "What differs from the host" lists
// them for users: keep the two in step.
var knownDifferences = map[string]knownDifference{
	"net TestIPConnRemoteName": {verdict: "skip",
		why: "raw IP sockets need CAP_NET_RAW, which a sandbox drops: the program has no capabilities"},
	"net TestIPConnSpecificMethods": {verdict: "skip",
		why: "raw IP sockets need CAP_NET_RAW, which a sandbox drops: the program has no capabilities"},
	"os/exec TestFindExecutableVsNoexec": {verdict: "skip",
		why: "mounting a tmpfs needs CAP_SYS_ADMIN, which a sandbox drops: the program has no capabilities"},
	"syscall TestAmbientCaps": {verdict: "skip", drivers: []string{"lxc"},
		why: "libvirt's LXC driver takes CAP_SYS_TIME out of a container's bounding set, even with -p: the host's clock is not a container's to set"},
	// Not a limit of QEMU: the launcher could carry the caller's limits in
	// the config for the init to set. It does not yet; its own soft
	// nofile is not the caller's either, since the Go runtime raises it at
	// start and keeps the original only for its children.
	"syscall TestRlimitRestored": {verdict: "pass", drivers: []string{"qemu"},
		why: "the program gets the guest kernel's default resource limits (nofile 1024 soft, 4096 hard), not the caller's; the test runs only where the soft nofile limit is below the hard one"},
	"syscall TestUnshare": {verdict: "skip",
		why: "the test needs a network interface besides loopback, and a sandbox has none without -N"},
}

// TestConformance runs the standard library tests of conformancePackages
// on the host and through go test -exec in a sandbox on each driver, and
// checks that every test's verdict (pass, fail, skip) in a sandbox is the
// host's, but for knownDifferences.
func TestConformance(t *testing.T) {
	gocache := goEnv(t, "GOCACHE")
	start := time.Now()
	host := runConformance(t, "")
	t.Logf("host: %d tests in %v", len(host.verdicts), time.Since(start).Round(time.Second))
	onEachDriver(t, func(t *testing.T, uri string) {
		// PATH: os, os/exec and syscall tests build helpers with the go
		// command, found along PATH, which the sandbox's clean
		// environment lacks. The host's build cache, writable: go
		// build needs one, and the host run has just filled it.
		exec := launcher + " -c " + uri + " --pass-env PATH -e GOCACHE=" + gocache + " --rw " + gocache
		if uri == qemuURI {
			// As many CPUs as the host: tests adapt to the count (time's
			// TestLongAdjustTimers skips on one with -short), and a
			// machine of one is only the default for a fast boot.
			exec += fmt.Sprintf(" --vcpus %d", runtime.NumCPU())
			if coldBoot {
				exec += " --cold-boot"
			}
		}
		start := time.Now()
		got := runConformance(t, exec)
		t.Logf("%s: %d tests in %v", uri, len(got.verdicts), time.Since(start).Round(time.Second))
		for _, d := range compareVerdicts(host, got, driverName(uri)) {
			t.Error(d)
		}
	})
}

// results are a run's verdicts ("pass", "fail", "skip") and outputs, keyed
// by "package TestName", and by "package" for a package's own.
type results struct {
	verdicts map[string]string
	outputs  map[string]string
}

// runConformance runs the suite with exec as go test's -exec (none: on the
// host).
func runConformance(t *testing.T, exec string) results {
	t.Helper()
	res := results{verdicts: map[string]string{}, outputs: map[string]string{}}
	privileged := os.Getuid() == 0
	groups := [][]string{conformancePackages, privilegedPackages}
	for i, pkgs := range groups {
		args := append([]string(nil), conformanceFlags...)
		if exec != "" {
			e := exec
			if i == 1 && privileged {
				// Root of the host, as on the host: in a user
				// namespace (LXC's default with -p) root's ids are
				// not the host's, nor its build cache root's.
				e += " -p --userns off"
			}
			args = append(args, "-exec", e+" --")
		}
		goTestJSON(t, append(args, pkgs...), res)
	}
	return res
}

// testEvent is the part of a go test -json event the suite reads.
type testEvent struct {
	Action, Package, Test, Output string
}

// goTestJSON runs go test with args from a directory outside /tmp, where
// the launcher's working directory is the host's, and adds its results to
// res.
func goTestJSON(t *testing.T, args []string, res results) {
	t.Helper()
	cmd := exec.Command("go", append([]string{"test"}, args...)...)
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), "GOFLAGS=", "GOWORK=off")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, _ := cmd.Output()
	outputs := map[string]*strings.Builder{}
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e testEvent
		if json.Unmarshal(sc.Bytes(), &e) != nil || e.Package == "" {
			continue
		}
		key := e.Package
		if e.Test != "" {
			key += " " + e.Test
		}
		switch e.Action {
		case "pass", "fail", "skip":
			res.verdicts[key] = e.Action
			n++
		case "output":
			if outputs[key] == nil {
				outputs[key] = &strings.Builder{}
			}
			outputs[key].WriteString(e.Output)
		}
	}
	for k, b := range outputs {
		res.outputs[k] = b.String()
	}
	if n == 0 {
		t.Fatalf("go test %q reported nothing; stderr:\n%s", args, stderr.String())
	}
}

// compareVerdicts lists how got differs from host beyond the known
// differences of driver, and the known differences it no longer shows.
func compareVerdicts(hostRes, gotRes results, driver string) []string {
	host, got := hostRes.verdicts, gotRes.verdicts
	keys := map[string]bool{}
	for k := range host {
		keys[k] = true
	}
	for k := range got {
		keys[k] = true
	}
	// A package that ended early in the sandbox is one difference, not
	// one per test.
	ran := map[string]bool{}
	for k := range got {
		if pkg, test, _ := strings.Cut(k, " "); test != "" {
			ran[pkg] = true
		}
	}
	var diffs []string
	notRun := map[string]int{}
	for k := range keys {
		pkg, test, _ := strings.Cut(k, " ")
		if test != "" && (!ran[pkg] || got[k] == "" && got[pkg] == "fail") {
			// The package failed before the test ran: its own line,
			// with its output, says why.
			notRun[pkg]++
			continue
		}
		top, sub := splitSubtest(k)
		if known, ok := knownFor(top, driver); ok {
			// Subtests follow their test.
			if !sub && got[k] != known.verdict {
				diffs = append(diffs, fmt.Sprintf("%s: %s in the sandbox, known to be %s there (%s): if the sandbox now behaves as the host, remove it from knownDifferences; its output:\n%s", k, verdictOf(got[k]), known.verdict, known.why, gotRes.outputs[k]))
			}
			continue
		}
		if host[k] != got[k] {
			diffs = append(diffs, fmt.Sprintf("%s: %s in the sandbox, %s on the host; its output in the sandbox:\n%s", k, verdictOf(got[k]), verdictOf(host[k]), gotRes.outputs[k]))
		}
	}
	for pkg, n := range notRun {
		diffs = append(diffs, fmt.Sprintf("%s: %d tests not run in the sandbox; what the unfinished ones printed:\n%s", pkg, n, unfinished(gotRes, pkg)))
	}
	sort.Strings(diffs)
	return diffs
}

// unfinished is what the tests of pkg that have no verdict printed, but for
// go test's own lines: where a sandbox that ended early says why.
func unfinished(res results, pkg string) string {
	var b strings.Builder
	for k, out := range res.outputs {
		if p, test, _ := strings.Cut(k, " "); p != pkg || test == "" || res.verdicts[k] != "" {
			continue
		}
		for _, line := range strings.SplitAfter(out, "\n") {
			if !strings.HasPrefix(line, "=== ") {
				b.WriteString(line)
			}
		}
	}
	return b.String()
}

// splitSubtest returns the key of the top-level test of a key, and whether
// the key is a subtest's.
func splitSubtest(key string) (string, bool) {
	pkg, test, _ := strings.Cut(key, " ")
	top, _, sub := strings.Cut(test, "/")
	return pkg + " " + top, sub
}

// knownFor finds the known difference of a top-level test on driver.
func knownFor(key, driver string) (knownDifference, bool) {
	known, ok := knownDifferences[key]
	if !ok {
		return known, false
	}
	if len(known.drivers) == 0 {
		return known, true
	}
	for _, d := range known.drivers {
		if d == driver {
			return known, true
		}
	}
	return known, false
}

func verdictOf(v string) string {
	if v == "" {
		return "not run"
	}
	return v
}

// goEnv is a go env variable of the go command the tests run.
func goEnv(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("go", "env", name).Output()
	v := strings.TrimSpace(string(out))
	if err != nil || v == "" {
		t.Fatalf("go env %s: %q, %v", name, v, err)
	}
	return v
}

// TestCompareVerdicts checks the comparison TestConformance rests on.
func TestCompareVerdicts(t *testing.T) {
	v := func(kv ...string) results {
		r := results{verdicts: map[string]string{}, outputs: map[string]string{}}
		for i := 0; i < len(kv); i += 2 {
			r.verdicts[kv[i]] = kv[i+1]
		}
		return r
	}
	host := v("os", "pass", "os TestA", "pass", "os TestB", "skip",
		"syscall", "pass", "syscall TestUnshare", "pass", "syscall TestUnshare/x", "pass")
	for _, tt := range []struct {
		name  string
		got   results
		diffs int
	}{
		{"as the host but for a known difference", v("os", "pass", "os TestA", "pass", "os TestB", "skip",
			"syscall", "pass", "syscall TestUnshare", "skip"), 0},
		{"a test failing", v("os", "fail", "os TestA", "fail", "os TestB", "skip",
			"syscall", "pass", "syscall TestUnshare", "skip"), 2},
		{"a known difference gone", v("os", "pass", "os TestA", "pass", "os TestB", "skip",
			"syscall", "pass", "syscall TestUnshare", "pass", "syscall TestUnshare/x", "pass"), 1},
		{"a package that did not run", v("os", "fail",
			"syscall", "pass", "syscall TestUnshare", "skip"), 2},
		{"a test skipped", v("os", "pass", "os TestA", "skip", "os TestB", "skip",
			"syscall", "pass", "syscall TestUnshare", "skip"), 1},
	} {
		if d := compareVerdicts(host, tt.got, "lxc"); len(d) != tt.diffs {
			t.Errorf("%s: %d differences %q, want %d", tt.name, len(d), d, tt.diffs)
		}
	}
}
