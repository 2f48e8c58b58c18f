package options

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/virt-sandbox/virt-sandbox/config"
)

func TestTestOutputs(t *testing.T) {
	const wd = "/src/pkg"
	for _, tt := range []struct {
		name string
		argv []string
		want []string
	}{
		{"not a test binary", []string{"/w/b001/x", "-test.coverprofile=/w/b001/c.out"}, nil},
		{"no outputs", []string{"/w/b001/pkg.test", "-test.paniconexit0", "-test.timeout=10m0s"}, nil},
		{"coverage as go test passes it", []string{"/w/b001/pkg.test", "-test.paniconexit0", "-test.gocoverdir=/w/b001/gocoverdir", "-test.timeout=10m0s", "-test.coverprofile=/w/b001/_cover_.out"},
			[]string{"/w/b001", "/w/b001/gocoverdir"}},
		{"profile relative to the output directory", []string{"pkg.test", "-test.outputdir=/out", "-test.cpuprofile=cpu.out", "-test.trace=t/trace.out"},
			[]string{"/out", "/out/t"}},
		{"profile relative to the working directory", []string{"./pkg.test", "-test.memprofile=mem.out"}, []string{wd}},
		{"relative output directory", []string{"./pkg.test", "-test.outputdir=o", "-test.blockprofile=b.out"}, []string{wd + "/o"}},
		{"test log", []string{"/w/pkg.test", "-test.testlogfile=/w/b001/testlog.txt"}, []string{"/w/b001"}},
		{"value as the next argument", []string{"/w/pkg.test", "-test.mutexprofile", "/m/mutex.out"}, []string{"/m"}},
		{"double dash", []string{"/w/pkg.test", "--test.coverprofile=/c/c.out"}, []string{"/c"}},
		// As the flag package: the user's -args after the first non-flag
		// argument, or after --, are not the binary's flags.
		{"after a non-flag", []string{"/w/pkg.test", "-test.v", "arg", "-test.coverprofile=/etc/c.out"}, nil},
		{"after --", []string{"/w/pkg.test", "--", "-test.coverprofile=/etc/c.out"}, nil},
	} {
		got := testOutputs(tt.argv, wd)
		slices.Sort(got)
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s: testOutputs(%q) = %q, want %q", tt.name, tt.argv, got, tt.want)
		}
	}
}

func TestMinimalDirs(t *testing.T) {
	for _, tt := range []struct {
		want map[string]bool
		kept []string
	}{
		{map[string]bool{"/a": false, "/a/b": false}, []string{"/a"}},
		{map[string]bool{"/a": true, "/a/b": false}, []string{"/a"}},
		// A writable directory inside a read-only one is a mount of its own.
		{map[string]bool{"/a": false, "/a/b": true}, []string{"/a", "/a/b"}},
		{map[string]bool{"/a": false, "/ab": false}, []string{"/a", "/ab"}},
		{map[string]bool{"/w/b001": true, "/w/b001/gocoverdir": true, "/x": false}, []string{"/x", "/w/b001"}},
	} {
		if got := minimalDirs(tt.want); !slices.Equal(got, tt.kept) {
			t.Errorf("minimalDirs(%v) = %q, want %q", tt.want, got, tt.kept)
		}
	}
}

// tmpDir is a directory under /tmp, which every sandbox has its own of,
// whatever TMPDIR says.
func tmpDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("/tmp", "options-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func TestConfigCallerMounts(t *testing.T) {
	clearDebugEnv(t)
	wd := tmpDir(t)
	t.Chdir(wd)
	work := tmpDir(t)
	b001 := filepath.Join(work, "b001")
	os.MkdirAll(filepath.Join(b001, "gocoverdir"), 0o755)
	elsewhere, err := os.MkdirTemp("/var/tmp", "options-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(elsewhere)
	// A link on the host's root leads to the same place inside.
	link := filepath.Join(elsewhere, "link")
	if err := os.Symlink(work, link); err != nil {
		t.Fatal(err)
	}
	ro := func(d string) config.Mount {
		return config.Mount{Type: config.HostBind, Target: d, Source: d, ReadOnly: true}
	}
	rw := func(d string) config.Mount { return config.Mount{Type: config.HostBind, Target: d, Source: d} }
	for _, tt := range []struct {
		name string
		args []string
		want []config.Mount
	}{
		{"working directory in /tmp", []string{"pwd"}, []config.Mount{ro(wd)}},
		{"made writable", []string{"--rw", ".", "pwd"}, []config.Mount{rw(wd)}},
		{"a user's mount over it", []string{"-m", "ram:/tmp=1M", "pwd"}, []config.Mount{{Type: config.RAM, Target: "/tmp", SizeKiB: 1024}}},
		{"program in /tmp", []string{filepath.Join(work, "prog")}, []config.Mount{ro(wd), ro(work)}},
		{"program in /tmp through a link", []string{filepath.Join(link, "prog")}, []config.Mount{ro(wd), ro(work)}},
		{"custom root", []string{"-r", "/srv", "pwd"}, nil},
		{"go test -exec in /tmp", []string{filepath.Join(b001, "pkg.test"), "-test.gocoverdir=" + b001 + "/gocoverdir", "-test.coverprofile=" + b001 + "/_cover_.out"},
			[]config.Mount{ro(wd), rw(b001)}},
		{"go test -exec elsewhere", []string{filepath.Join(elsewhere, "pkg.test"), "-test.coverprofile=" + elsewhere + "/_cover_.out"},
			[]config.Mount{ro(wd), rw(elsewhere)}},
		{"missing output directory", []string{"/x/pkg.test", "-test.coverprofile=/nonexistent/c.out"}, []config.Mount{ro(wd)}},
	} {
		cfg, err := configOf(t, tt.args...)
		if err != nil {
			t.Errorf("%s: Config(%q) = %v", tt.name, tt.args, err)
			continue
		}
		byTarget := func(a, b config.Mount) int { return strings.Compare(a.Target, b.Target) }
		slices.SortFunc(cfg.Mounts, byTarget)
		slices.SortFunc(tt.want, byTarget)
		if !slices.Equal(cfg.Mounts, tt.want) {
			t.Errorf("%s: Config(%q).Mounts = %+v, want %+v", tt.name, tt.args, cfg.Mounts, tt.want)
		}
	}
}

func TestConfigIncludes(t *testing.T) {
	clearDebugEnv(t)
	t.Chdir("/")
	for _, tt := range []struct {
		args []string
		err  string
	}{
		// Every sandbox has its own writable /tmp.
		{args: []string{"-i", "/tmp/x=/etc/hosts", "true"}},
		{args: []string{"-m", "ram:/mem=1M", "-i", "/mem/x=/etc/hosts", "true"}},
		{args: []string{"-W", "-i", "/etc/x=/etc/hosts", "true"}},
		{args: []string{"-i", "/etc/x=/etc/hosts", "true"}, err: `-i "/etc/x=/etc/hosts": /etc/x is not in a writable place`},
		// The innermost mount decides.
		{args: []string{"-m", "guest-bind:/tmp/g=/etc", "-i", "/tmp/g/x=/etc/hosts", "true"}, err: `-i "/tmp/g/x=/etc/hosts": /tmp/g/x is not`},
	} {
		_, err := configOf(t, tt.args...)
		if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("Config(%q) = %v, want error %q", tt.args, err, tt.err)
		}
	}
}
