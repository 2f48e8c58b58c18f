package tests

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"golang.org/x/sys/unix"

	"github.com/virt-sandbox/virt-sandbox/kmod"
)

const qemuURI = "qemu:///system"

// hostModules is the host kernel's module tree the QEMU tests start from.
func hostModules(t *testing.T) string {
	t.Helper()
	trees, _ := filepath.Glob("/lib/modules/*/modules.dep")
	if len(trees) == 0 {
		t.Fatal("no module tree in /lib/modules (setup-host.sh installs linux-image-amd64)")
	}
	return filepath.Dir(trees[len(trees)-1])
}

// TestCompressedModules boots with a module tree whose modules are gzip-,
// xz- and zstd-compressed copies of the host's, and checks from the init's
// debug log that each was loaded with its compression. It boots cold: a
// run restored from a template shows only the steps after the restore.
func TestCompressedModules(t *testing.T) {
	t.Parallel()
	src := hostModules(t)
	tree, err := kmod.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	mods, err := tree.Resolve("virtio_pci", "virtio_console", "9p", "9pnet_virtio", "virtio_rng")
	if err != nil {
		t.Fatal(err)
	}
	dst := hostDir(t)
	var dep strings.Builder
	want := map[string]string{}
	for i, m := range mods {
		comp := []string{"gz", "xz", "zst"}[i%3]
		rel := fmt.Sprintf("kernel/%s.ko.%s", m.Name, comp)
		if err := writeCompressed(filepath.Join(dst, rel), m.Path, comp); err != nil {
			t.Fatal(err)
		}
		// modules.dep lists each module's whole closure; ours are in load
		// order, so that is everything before it that it needs. Listing
		// all earlier modules is a superset the resolver must cope with.
		fmt.Fprintf(&dep, "%s:", rel)
		for j := i - 1; j >= 0; j-- {
			fmt.Fprintf(&dep, " kernel/%s.ko.%s", mods[j].Name, []string{"gz", "xz", "zst"}[j%3])
		}
		dep.WriteString("\n")
		want[m.Name] = comp
	}
	if err := os.WriteFile(filepath.Join(dst, "modules.dep"), []byte(dep.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"modules.builtin", "modules.alias"} {
		if b, err := os.ReadFile(filepath.Join(src, f)); err == nil {
			os.WriteFile(filepath.Join(dst, f), b, 0o644)
		}
	}
	r := sandbox(t, opts{}, "-d", "--cold-boot", "-c", qemuURI, "--kmodpath", dst, "/bin/sh", "-c", "echo booted")
	r.want(t, 0, "booted\n")
	for name, comp := range want {
		re := regexp.MustCompile(`module ` + name + ` \(` + comp + `, \d+ bytes\) loaded`)
		if !re.MatchString(r.stderr) {
			t.Errorf("the init's log does not show %s loaded from %s", name, comp)
		}
	}
}

func writeCompressed(dst, src, comp string) error {
	in, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	var w io.WriteCloser
	switch comp {
	case "gz":
		w = gzip.NewWriter(&buf)
	case "xz":
		if w, err = xz.NewWriter(&buf); err != nil {
			return err
		}
	case "zst":
		if w, err = zstd.NewWriter(&buf); err != nil {
			return err
		}
	}
	if _, err := w.Write(in); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, buf.Bytes(), 0o644)
}

// TestQEMUBootFailures: each way a machine cannot come up ends in time with
// status 125, one line saying why, and no domain left.
func TestQEMUBootFailures(t *testing.T) {
	t.Parallel()
	noVirtio := hostDir(t)
	src := hostModules(t)
	for _, f := range []string{"modules.builtin", "modules.alias"} {
		b, _ := os.ReadFile(filepath.Join(src, f))
		os.WriteFile(filepath.Join(noVirtio, f), b, 0o644)
	}
	// A tree with other modules but none of the virtio ones.
	os.WriteFile(filepath.Join(noVirtio, "modules.dep"), []byte("kernel/fs/isofs/isofs.ko:\n"), 0o644)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"missing kernel", []string{"--kernpath", "/boot/no-such-kernel"}, "/boot/no-such-kernel"},
		{"no virtio modules", []string{"--kmodpath", noVirtio}, "virtio_pci: module not found"},
		{"kernel panic", []string{"--kernel-args", "rdinit=/no-such-init"}, "kernel panic"},
	} {
		name := uniqueName("bootfail")
		r := sandbox(t, opts{timeout: 90 * time.Second}, append(append([]string{"-c", qemuURI, "-n", name}, tc.args...), "/bin/true")...)
		if r.code != 125 || !strings.Contains(r.stderr, tc.want) || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%s: exit %d, stderr %q; want 125 and one line containing %q", tc.name, r.code, r.stderr, tc.want)
		}
		checkGone(t, qemuURI, name)
	}
}

// TestEmbed runs a QEMU sandbox through libvirt's in-process driver in a
// mount namespace where no libvirtd socket can be reached.
func TestEmbed(t *testing.T) {
	t.Parallel()
	root, err := os.MkdirTemp("/var/tmp", "virt-sandbox-test-embed-root-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	script := `mount -t tmpfs none /run/libvirt || exit 99
virsh -c qemu:///system version >/dev/null 2>&1 && { echo "libvirtd reachable"; exit 98; }
exec "$0" -c "qemu:///embed?root=$1" /bin/sh -c 'echo embedded; exit 3'`
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script, launcher, root)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != 3 || stdout.String() != "embedded\n" {
		t.Errorf("embed: exit %d, stdout %q; want 3, %q; stderr:\n%s", code, stdout.String(), "embedded\n", stderr.String())
	}
}

// TestEmbedLogs checks that libvirt's own log lines, which the embedded
// driver writes in this process and in the processes it forks, go to a file
// under its root and never into the program's stderr, and with -d to
// stderr as well: the DAC driver warns "Invalid XATTR timestamp" for a disk
// whose remembered owner dates from an earlier boot, and a user's
// LIBVIRT_DEBUG asks for many more lines.
func TestEmbedLogs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("trusted.* attributes need root")
	}
	for _, tt := range []struct {
		name  string
		debug bool
		env   []string
	}{
		{"default", false, nil},
		{"LIBVIRT_DEBUG=info", false, []string{"LIBVIRT_DEBUG=info"}},
		{"-d", true, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := hostDir(t)
			disk := filepath.Join(dir, "disk.img")
			if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
				t.Fatal(err)
			}
			// As libvirt leaves them when the host rebooted while a
			// domain used the file: an owner, a count, a boot time.
			for k, v := range map[string]string{"dac": "+0:+0", "ref_dac": "1", "timestamp_dac": "1"} {
				if err := unix.Setxattr(disk, "trusted.libvirt.security."+k, []byte(v), 0); err != nil {
					t.Fatalf("setxattr %s: %v", k, err)
				}
			}
			root := filepath.Join(dir, "embed")
			args := []string{"-c", "qemu:///embed?root=" + root, "--disk", "file:d=" + disk, "/bin/sh", "-c", "echo out; echo err >&2"}
			if tt.debug {
				args = append([]string{"-d"}, args...)
			}
			r := sandbox(t, opts{env: tt.env}, args...)
			warning := "Invalid XATTR timestamp detected on " + disk
			switch {
			case r.code != 0 || r.stdout != "out\n":
				t.Errorf("exit %d, stdout %q; want 0, %q; stderr:\n%s", r.code, r.stdout, "out\n", r.stderr)
			case !tt.debug && r.stderr != "err\n":
				t.Errorf("stderr %q, want %q", r.stderr, "err\n")
			case tt.debug && !(strings.Contains(r.stderr, warning) && strings.Contains(r.stderr, "\nerr\n")):
				t.Errorf("-d: stderr lacks libvirt's warning or the program's line:\n%s", r.stderr)
			}
			log, err := os.ReadFile(filepath.Join(root, "log", "libvirt.log"))
			if err != nil || !bytes.Contains(log, []byte(warning)) {
				t.Errorf("%s/log/libvirt.log (%v) lacks libvirt's warning; it has:\n%s", root, err, log)
			}
		})
	}
}

// TestShareFS checks how host directories reach a QEMU sandbox: 9p by
// default, virtiofs when root asks on qemu:///system, read-only enforced by
// the host, shared mappings and writes through a host-bind mount working;
// a caller other than root cannot ask for virtiofs.
func TestShareFS(t *testing.T) {
	t.Parallel()
	if os.Getuid() != 0 {
		t.Skip("virtiofs needs a root caller")
	}
	// The guest's root cannot write through a read-only share: the host
	// refuses even when the guest remounts it read-write (-p keeps
	// CAP_SYS_ADMIN).
	script := `awk '$2 == "/" || $2 == "/mnt" || $2 == "/srv" { print $2, $3 }' /proc/mounts | sort
touch /virt-sandbox-test-x 2>/dev/null && echo root-written || echo root-refused
mount -o remount,rw /srv && awk '$2 == "/srv" { print substr($4, 1, 2) }' /proc/mounts
touch /srv/x 2>/dev/null && echo ro-written || echo ro-refused
echo inside >/mnt/new && echo data-written
python3 -c 'import mmap; f = open("/mnt/seed", "rb"); print(mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)[:4].decode())'`
	for _, tc := range []struct {
		name, fs string
		args     []string
	}{
		{"default", "9p", nil},
		{"virtiofs asked", "virtiofs", []string{"--share-fs", "virtiofs"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, ro := hostDir(t), hostDir(t)
			writeFile(t, filepath.Join(data, "seed"), "seed", 0o644)
			args := append(append([]string{"-c", qemuURI, "-p", "-m", "host-bind:/mnt=" + data, "-m", "host-bind:/srv=" + ro + ",ro"}, tc.args...), "/bin/sh", "-c", script)
			r := sandbox(t, opts{}, args...)
			want := fmt.Sprintf("/ %s\n/mnt %s\n/srv %s\nroot-refused\nrw\nro-refused\ndata-written\nseed\n", tc.fs, tc.fs, tc.fs)
			r.want(t, 0, want)
			if got := readFile(t, filepath.Join(data, "new")); got != "inside\n" {
				t.Errorf("%s/new on the host = %q; want %q", data, got, "inside\n")
			}
			if entries, _ := os.ReadDir(ro); len(entries) != 0 {
				t.Errorf("the read-only source holds %v after the run", entries)
			}
			absentOnHost(t, "/virt-sandbox-test-x")
		})
	}
	t.Run("user", func(t *testing.T) {
		r := sandbox(t, opts{asUser: true}, "-c", qemuURI, "/bin/sh", "-c", `awk '$2 == "/" { print $3 }' /proc/mounts`)
		r.want(t, 0, "9p\n")
		r = sandbox(t, opts{asUser: true}, "-c", qemuURI, "--share-fs", "virtiofs", "/bin/true")
		checkRefused(t, r, "--share-fs virtiofs: virtiofsd reads the host's files as root")
	})
}

// TestQEMUTemplate: a QEMU sandbox is restored from a template, and each
// run starts from the same clean state with its own clock and entropy:
// the host's time, random bytes of its own, and nothing a run before it
// left in /tmp. --cold-boot boots the kernel.
func TestQEMUTemplate(t *testing.T) {
	if coldBoot {
		t.Skip("VIRT_SANDBOX_TEST_COLD_BOOT=1: no templates")
	}
	t.Parallel()
	script := `head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n'; echo; date +%s.%N; ls -A /tmp; touch /tmp/left-behind`
	seen := map[string]bool{}
	for i := range 3 {
		if i > 0 {
			// A guest clock left as saved would now be behind.
			time.Sleep(3 * time.Second)
		}
		before := float64(time.Now().UnixNano()) / 1e9
		r := sandbox(t, opts{}, "-d", "-c", qemuURI, "--", "/bin/sh", "-c", script)
		after := float64(time.Now().UnixNano()) / 1e9
		if r.code != 0 || !strings.Contains(r.stderr, "virt-sandbox: restored virt-sandbox-tpl-") {
			t.Fatalf("run %d: exit %d, not restored from a template; stderr:\n%s", i, r.code, r.stderr)
		}
		// The restored machine has the data ports: they are in the
		// template's device set.
		if !strings.Contains(r.stderr, "stdio: on the data ports") {
			t.Errorf("run %d: stdio not on the data ports; stderr:\n%s", i, r.stderr)
		}
		lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
		if len(lines) != 2 {
			t.Fatalf("run %d printed %q, want random bytes and the time (and an empty /tmp)", i, r.stdout)
		}
		if seen[lines[0]] {
			t.Errorf("run %d read random bytes %s that a run before read too", i, lines[0])
		}
		seen[lines[0]] = true
		var guest float64
		fmt.Sscan(lines[1], &guest)
		if guest < before-1 || guest > after+1 {
			t.Errorf("run %d: the guest's clock said %.3f, the run lasted from %.3f to %.3f", i, guest, before, after)
		}
	}
	r := sandbox(t, opts{stdin: strings.NewReader("cold\n")}, "-d", "--cold-boot", "-c", qemuURI, "/bin/cat")
	if r.code != 0 || r.stdout != "cold\n" || !strings.Contains(r.stderr, "booting cold: --cold-boot") || strings.Contains(r.stderr, "restored") ||
		!strings.Contains(r.stderr, "stdio: on the data ports") {
		t.Errorf("--cold-boot: exit %d, stdout %q, want cold and stdio on the data ports; stderr:\n%s", r.code, r.stdout, r.stderr)
	}
}

// TestQEMUTemplateParallel: 16 sandboxes with a share each, 4 at a time,
// from one template: each gets its own share and its own result.
func TestQEMUTemplateParallel(t *testing.T) {
	t.Parallel()
	var wg sync.WaitGroup
	results := make([]result, 16)
	dirs := make([]string, 16)
	slots := make(chan struct{}, 4)
	for i := range results {
		dirs[i] = t.TempDir()
		if err := os.WriteFile(filepath.Join(dirs[i], "n"), []byte(fmt.Sprint(i)), 0o644); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			results[i] = sandbox(t, opts{}, "-c", qemuURI, "-m", "host-bind:/mnt/own="+dirs[i], "-e", fmt.Sprintf("N=%d", i),
				"--", "/bin/sh", "-c", `echo "$N $(cat /mnt/own/n)"; echo written >/mnt/own/out`)
		})
	}
	wg.Wait()
	for i, r := range results {
		r.want(t, 0, fmt.Sprintf("%d %d\n", i, i))
		if b, err := os.ReadFile(filepath.Join(dirs[i], "out")); err != nil || string(b) != "written\n" {
			t.Errorf("run %d wrote %q (%v) to its share, want written", i, b, err)
		}
	}
}
