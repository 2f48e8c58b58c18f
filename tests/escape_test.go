package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// escapeConfig is one kind of sandbox the escape suite runs in.
type escapeConfig struct {
	name   string
	uri    string
	args   []string
	asUser bool
	// image runs the suite's image (its user is root) instead of a
	// program of the host's root.
	image bool
}

var escapeConfigs = []escapeConfig{
	{name: "lxc", uri: "lxc:///"},
	{name: "lxc user", uri: "lxc:///", asUser: true},
	{name: "lxc -p", uri: "lxc:///", args: []string{"-p"}},
	{name: "lxc user -p", uri: "lxc:///", args: []string{"-p"}, asUser: true},
	{name: "lxc -p --userns off", uri: "lxc:///", args: []string{"-p", "--userns", "off"}},
	{name: "lxc image", uri: "lxc:///", image: true},
	{name: "lxc image -p", uri: "lxc:///", args: []string{"-p"}, image: true},
	{name: "lxc image --userns off", uri: "lxc:///", args: []string{"--userns", "off"}, image: true},
	{name: "qemu", uri: "qemu:///system"},
	{name: "qemu -p", uri: "qemu:///system", args: []string{"-p"}},
}

// The verdicts: denied; contained, allowed inside with no effect on the
// host (a write to a sandbox's own writable layer); allowed.
const (
	denied    = "denied"
	contained = "contained"
	allowed   = "allowed"
)

// escapeExpected says, for each attempt, in which configurations it is
// not denied, and why that is accepted (README, "What a sandbox
// contains"). Every other cell must read denied.
var escapeExpected = map[string]map[string]string{
	// An image's root is a throw-away layer over the image.
	"write-ro-root": {"lxc image": contained, "lxc image -p": contained, "lxc image --userns off": contained},
	// Without a user namespace, -p is root of the host, held back by
	// nothing a remount cannot undo: the old behaviour, by choice only.
	"remount-root-rw": {"lxc -p --userns off": allowed, "lxc image -p": contained},
	"remount-bind-rw": {"lxc -p --userns off": allowed},
	// A QEMU guest's own kernel, whose uid 0 the program is.
	"write-proc-sys":      {"qemu": allowed, "qemu -p": allowed},
	"write-sys":           {"qemu": allowed, "qemu -p": allowed},
	"write-sysrq-trigger": {"qemu": allowed, "qemu -p": allowed},
	"load-module":         {"qemu -p": allowed},
	"set-clock":           {"qemu -p": allowed},
	// A mount in the sandbox's own mount namespace.
	"mount-tmpfs": {"lxc -p": allowed, "lxc user -p": allowed, "lxc -p --userns off": allowed, "lxc image -p": allowed, "qemu -p": allowed},
	// The init of its own sandbox, which runs as the same uid: the
	// program can end its sandbox, as it can by exiting.
	"signal-init": {"lxc": allowed, "lxc -p --userns off": allowed, "lxc image --userns off": allowed, "qemu": allowed, "qemu -p": allowed},
	"ptrace-init": {"lxc -p --userns off": allowed, "qemu -p": allowed},
	// The host's root is shared read-only with the caller's rights, and
	// the caller here is root.
	"read-etc-shadow": {"lxc": allowed, "lxc -p --userns off": allowed, "qemu": allowed, "qemu -p": allowed},
	// Likewise; an image's /root is the image's.
	"read-root-home": {"lxc": allowed, "lxc -p --userns off": allowed, "qemu": allowed, "qemu -p": allowed,
		"lxc image": allowed, "lxc image -p": allowed, "lxc image --userns off": allowed},
	// A network namespace with loopback only.
	"raw-socket": {"lxc -p --userns off": allowed, "qemu -p": allowed},
	// The private /tmp hides the host's; root of the host, or of a QEMU
	// guest whose root is the host's over 9p with the caller's rights,
	// can take it away.
	"unmount-to-reveal": {"lxc -p --userns off": allowed, "qemu -p": allowed},
}

// escapeSetup is what the attempts aim at on the host.
type escapeSetup struct {
	dir, binary, probe, share, secret string
	hostPID                           int
	disk                              uint64
	imageRef, imageRoot               string
}

// TestEscapes runs tests/escape, which tries what a sandbox must not let a
// program do to its host, once in each configuration, and checks each
// verdict against escapeExpected; it logs the table of them.
func TestEscapes(t *testing.T) {
	t.Parallel()
	s := newEscapeSetup(t)
	verdicts := make(map[string]map[string]string)
	var mu sync.Mutex
	t.Run("group", func(t *testing.T) {
		for _, c := range escapeConfigs {
			t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
				t.Parallel()
				got := s.run(t, c)
				mu.Lock()
				verdicts[c.name] = got
				mu.Unlock()
				for attempt, v := range got {
					want := escapeExpected[attempt][c.name]
					if want == "" {
						want = denied
					}
					switch {
					case v == want:
					case v == allowed:
						t.Errorf("%s: unexpectedly allowed (want %s)", attempt, want)
					default:
						t.Errorf("%s: %s, but the table says %s: update escapeExpected and the README", attempt, v, want)
					}
				}
			})
		}
	})
	t.Log("\n" + escapeTable(verdicts))
}

func newEscapeSetup(t *testing.T) *escapeSetup {
	s := &escapeSetup{dir: hostDir(t)}
	s.binary = filepath.Join(s.dir, "escape")
	build := exec.Command("go", "build", "-o", s.binary, "./escape")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building tests/escape: %v\n%s", err, out)
	}
	// Writable by anyone on the host: only the mounts may stop a write.
	s.probe, s.share = filepath.Join(s.dir, "probe"), filepath.Join(s.dir, "share")
	for _, d := range []string{s.probe, s.share} {
		os.Mkdir(d, 0o777)
		os.Chmod(d, 0o777)
	}
	// Under /tmp, which every sandbox has a private one of: not shared.
	secretDir, err := os.MkdirTemp("/tmp", "virt-sandbox-escape-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(secretDir) })
	os.Chmod(secretDir, 0o755)
	s.secret = filepath.Join(secretDir, "secret")
	os.WriteFile(s.secret, []byte("secret\n"), 0o644)
	rel, _ := filepath.Rel(s.share, s.secret)
	os.Symlink(s.secret, filepath.Join(s.share, "absolute"))
	os.Symlink(rel, filepath.Join(s.share, "relative"))

	sleeper := exec.Command("sleep", "3600")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	s.hostPID = sleeper.Process.Pid
	var st syscall.Stat_t
	syscall.Stat("/", &st)
	s.disk = st.Dev

	reg := startRegistry(t)
	nonce := randomHex(t)
	forgetImages(t, nonce)
	bin, err := os.ReadFile(s.binary)
	if err != nil {
		t.Fatal(err)
	}
	files := layer(t, types.DockerLayer, fileEntry("escape", string(bin), 0o755), dirEntry("probe", 0o777, 0))
	img := newImage(t, runtime.GOARCH, v1.Config{Entrypoint: []string{"/escape"}}, baseLayer(t, types.DockerLayer), files)
	s.imageRef = fmt.Sprintf("%s/vsbtest/escape-%s:latest", reg.addr, nonce)
	push(t, s.imageRef, img)
	imageOK(t, "pull", "--insecure", s.imageRef)
	s.imageRoot = filepath.Join(storeDir(), "rootfs", strings.TrimPrefix(digestOf(t, img), "sha256:"))
	return s
}

// run runs the attempts in a sandbox of c and returns their verdicts.
func (s *escapeSetup) run(t *testing.T, c escapeConfig) map[string]string {
	tag := strings.NewReplacer(" ", "", "-", "").Replace(c.name)
	// At the share's own path, which the host's root has: a target it
	// lacks would put an overlay over the root, and a remount would
	// reach that instead of the host's filesystem.
	bind := "host-bind:" + s.share + "=" + s.share + ",ro"
	flags := []string{"-ro-bind", s.share, "-secret", s.secret, "-host-pid", fmt.Sprint(s.hostPID),
		"-disk", fmt.Sprint(s.disk), "-tag", tag}
	probe := s.probe
	var r result
	if c.image {
		probe = filepath.Join(s.imageRoot, "probe")
		args := append([]string{"run", "-c", c.uri, "-m", bind}, c.args...)
		args = append(args, s.imageRef, "--")
		r = imageRun(t, opts{}, append(args, append([]string{"-probe", "/probe"}, flags...)...)...)
	} else {
		args := append([]string{"-c", c.uri, "-m", bind}, c.args...)
		args = append(args, "--", s.binary, "-probe", s.probe)
		r = sandbox(t, opts{asUser: c.asUser}, append(args, flags...)...)
	}
	if r.code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", r.code, r.stderr)
	}
	got := make(map[string]string)
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		name, rest, _ := strings.Cut(l, " ")
		got[name] = denied
		if rest == allowed {
			got[name] = allowed
		}
		t.Log(l)
	}
	for _, a := range escapeAttempts {
		if _, ok := got[a]; !ok {
			t.Errorf("tests/escape printed nothing for %s", a)
		}
	}
	// A write is judged by the host: allowed only if it got there.
	for attempt, dir := range map[string]string{"write-ro-root": probe, "remount-root-rw": probe, "write-ro-bind": s.share, "remount-bind-rw": s.share} {
		p := filepath.Join(dir, tag+"-"+attempt)
		_, err := os.Lstat(p)
		switch {
		case err == nil:
			got[attempt] = allowed
			os.Remove(p)
		case got[attempt] == allowed:
			got[attempt] = contained
		}
	}
	return got
}

// escapeTable is the verdicts as a Markdown table, attempts by
// configuration, in the order the program tries them.
func escapeTable(verdicts map[string]map[string]string) string {
	var b strings.Builder
	b.WriteString("| attempt |")
	for _, c := range escapeConfigs {
		b.WriteString(" " + c.name + " |")
	}
	b.WriteString("\n|---|" + strings.Repeat("---|", len(escapeConfigs)) + "\n")
	for _, a := range escapeAttempts {
		b.WriteString("| " + a + " |")
		for _, c := range escapeConfigs {
			v := verdicts[c.name][a]
			if v == "" {
				v = "?"
			}
			b.WriteString(" " + v + " |")
		}
		b.WriteString("\n")
	}
	return b.String()
}

// escapeAttempts are tests/escape's attempts, in its order.
var escapeAttempts = []string{
	"write-ro-root", "remount-root-rw", "write-ro-bind", "remount-bind-rw",
	"write-proc-sys", "write-sys", "write-sysrq-trigger", "mount-tmpfs", "mknod-block",
	"load-module", "set-clock", "signal-init", "signal-host-process", "ptrace-init",
	"libvirt-socket", "read-etc-shadow", "read-root-home", "read-unshared",
	"bind-symlink-absolute", "bind-symlink-relative", "bind-dotdot", "raw-socket",
	"unmount-to-reveal",
}
