package tests

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// goTest runs go test in the sample module with extra args and returns its
// per-package verdicts ("ok pkg" / "FAIL pkg") and exit status.
func goTest(t *testing.T, env []string, args ...string) ([]string, int, string) {
	t.Helper()
	cmd := exec.Command("go", append([]string{"test", "-count=1"}, args...)...)
	cmd.Dir = "testdata/sample"
	cmd.Env = append(os.Environ(), append([]string{"GOFLAGS=", "GOWORK=off"}, env...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Run()
	verdict := regexp.MustCompile(`(?m)^(ok|FAIL)\s+(example\.com/\S+)`)
	var got []string
	for _, m := range verdict.FindAllStringSubmatch(out.String(), -1) {
		got = append(got, m[1]+" "+m[2])
	}
	sort.Strings(got)
	return got, cmd.ProcessState.ExitCode(), out.String()
}

// TestGoTestExec: go test -exec through a sandbox reports what a plain go
// test reports, with a failing package failing, a coverage profile written
// on the host, testdata read, and writes to a --rw directory arriving;
// with go's work directory in /tmp (which the sandbox has its own of) and,
// through GOTMPDIR, outside it.
func TestGoTestExec(t *testing.T) {
	want, wantCode, _ := goTest(t, nil, "./...")
	if wantCode == 0 || len(want) != 2 {
		t.Fatalf("plain go test: %v, exit %d; want one ok and one FAIL package and a non-zero exit", want, wantCode)
	}
	onEachDriver(t, func(t *testing.T, uri string) {
		for _, gotmp := range []string{"", hostDir(t)} {
			dir := hostDir(t)
			cover := filepath.Join(dir, "cover.out")
			out := filepath.Join(dir, "written-by-test")
			exec := launcher + " -c " + uri + " --rw " + dir + " --pass-env SAMPLE_* --"
			got, code, log := goTest(t, []string{"SAMPLE_OUT=" + out, "GOTMPDIR=" + gotmp}, "-exec", exec, "-coverprofile="+cover, "./...")
			if strings.Join(got, "\n") != strings.Join(want, "\n") || code != wantCode {
				t.Errorf("GOTMPDIR=%s go test -exec: %v, exit %d; want %v, exit %d; output:\n%s", gotmp, got, code, want, wantCode, log)
			}
			if b, err := os.ReadFile(cover); err != nil || !strings.Contains(string(b), "example.com/sample/pass/pass.go") {
				t.Errorf("GOTMPDIR=%s: coverage profile: %q, %v; want one covering pass.go", gotmp, b, err)
			}
			if b, err := os.ReadFile(out); err != nil || string(b) != "sample input\n" {
				t.Errorf("GOTMPDIR=%s: file the test wrote through --rw: %q, %v; want the testdata it read", gotmp, b, err)
			}
		}
	})
}

// TestTimeout: --timeout destroys the sandbox when it expires and exits 124.
func TestTimeout(t *testing.T) {
	onEachDriver(t, func(t *testing.T, uri string) {
		name := uniqueName("timeout-" + driverName(uri))
		start := time.Now()
		r := sandbox(t, opts{timeout: time.Minute}, "-c", uri, "-n", name, "--timeout", "2s", "sleep", "60")
		if r.code != 124 || !strings.Contains(r.stderr, "timed out after 2s") {
			t.Errorf("exit %d, stderr %q; want 124 and a message saying it timed out", r.code, r.stderr)
		}
		if d := time.Since(start); d > 15*time.Second {
			t.Errorf("took %v to time out after 2s", d)
		}
		checkGone(t, uri, name)
	})
}

// TestFanOut: 16 sandboxes as xargs -P 8 all succeed and leave nothing.
func TestFanOut(t *testing.T) {
	before := leftovers()
	cmd := exec.Command("sh", "-c", `seq 16 | xargs -P 8 -I{} "$0" -c lxc:/// /bin/sh -c 'echo run {}'`, launcher)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("xargs -P 8: %v\n%s", err, out)
	}
	if n := strings.Count(string(out), "run "); n != 16 {
		t.Errorf("%d runs printed, want 16:\n%s", n, out)
	}
	if after := leftovers(); len(after) > len(before) {
		t.Errorf("left behind %v", after)
	}
}
