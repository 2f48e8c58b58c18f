package sandbox

// The tests of the drivers' prepare steps: a fake kernel, module tree and
// init stand for the host's, since what prepare finds and builds from them
// is what it is for.

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/cavaliergopher/cpio"

	"github.com/virt-sandbox/virt-sandbox/config"
	"github.com/virt-sandbox/virt-sandbox/config/guest"
)

// fakeKernelVersion is what the fake bzImage says it is.
const fakeKernelVersion = "6.1.0-test"

// writeBzImage writes a file with just enough of the x86 boot protocol
// header for bzImageVersion: "HdrS" at 0x202 and, at 0x20e, the offset
// (from 0x200) of the version string.
func writeBzImage(t *testing.T, path, banner string) []byte {
	t.Helper()
	img := make([]byte, 0x400)
	copy(img[0x202:], "HdrS")
	const off = 0x100
	binary.LittleEndian.PutUint16(img[0x20e:], off)
	copy(img[off+0x200:], banner+"\x00")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	return img
}

// fakeModules are the files of the fake module tree, and modules.dep says
// who needs whom. The suffixes vary so the initrd must keep each one.
var fakeModules = []struct{ file, deps string }{
	{"kernel/drivers/virtio/virtio_pci.ko.zst", "kernel/drivers/virtio/virtio_pci_modern_dev.ko.zst kernel/drivers/virtio/virtio_ring.ko"},
	{"kernel/drivers/virtio/virtio_pci_modern_dev.ko.zst", ""},
	{"kernel/drivers/virtio/virtio_ring.ko", ""},
	{"kernel/drivers/char/virtio_console.ko.xz", "kernel/drivers/virtio/virtio_ring.ko"},
	{"kernel/fs/9p/9p.ko.xz", "kernel/net/9p/9pnet.ko.gz kernel/fs/netfs/netfs.ko"},
	{"kernel/net/9p/9pnet.ko.gz", ""},
	{"kernel/fs/netfs/netfs.ko", ""},
	{"kernel/net/9p/9pnet_virtio.ko.zst", "kernel/net/9p/9pnet.ko.gz kernel/drivers/virtio/virtio_ring.ko"},
	{"kernel/drivers/char/hw_random/virtio-rng.ko", "kernel/drivers/virtio/virtio_ring.ko"},
	// Only for a root the init may lay an overlay over.
	{"kernel/fs/overlayfs/overlay.ko", ""},
	// Not needed: must stay out of the initrd.
	{"kernel/fs/ext4/ext4.ko", ""},
}

// wantInitrdModules is the load order of baseModules in the fake tree:
// each module after its dependencies, each once.
var wantInitrdModules = []string{
	"modules/000-virtio_pci_modern_dev.ko.zst",
	"modules/001-virtio_ring.ko",
	"modules/002-virtio_pci.ko.zst",
	"modules/003-virtio_console.ko.xz",
	"modules/004-9pnet.ko.gz",
	"modules/005-netfs.ko",
	"modules/006-9p.ko.xz",
	"modules/007-9pnet_virtio.ko.zst",
	"modules/008-virtio-rng.ko",
}

// writeModuleTree writes a module tree into dir and returns the contents of
// its modules by base name.
func writeModuleTree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	contents := map[string][]byte{}
	var dep strings.Builder
	for _, m := range fakeModules {
		p := filepath.Join(dir, m.file)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		b := []byte("fake module " + m.file)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		contents[filepath.Base(m.file)] = b
		fmt.Fprintf(&dep, "%s: %s\n", m.file, m.deps)
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return contents
}

// fakeMachine is a kernel, its module tree and an init, all in a temporary
// directory.
type fakeMachine struct {
	kernel  string
	kernImg []byte
	modRoot string // holds fakeKernelVersion/modules.dep
	modules map[string][]byte
	init    string
	initImg []byte
}

func newFakeMachine(t *testing.T) *fakeMachine {
	t.Helper()
	dir := t.TempDir()
	m := &fakeMachine{
		kernel:  filepath.Join(dir, "bzImage"),
		modRoot: filepath.Join(dir, "lib", "modules"),
		init:    filepath.Join(dir, "virt-sandbox-init"),
	}
	m.kernImg = writeBzImage(t, m.kernel, fakeKernelVersion+" (builder@host) #1 SMP")
	m.modules = writeModuleTree(t, filepath.Join(m.modRoot, fakeKernelVersion))
	// Random bytes make the initrd this test's own, even in a shared cache.
	m.initImg = make([]byte, 64)
	rand.Read(m.initImg)
	m.initImg = append([]byte("\x7fELF fake init "), m.initImg...)
	if err := os.WriteFile(m.init, m.initImg, 0o755); err != nil {
		t.Fatal(err)
	}
	return m
}

// useTempCache points CacheDir at a temporary directory when it can, and
// otherwise (root's cache is fixed) removes what the test puts there.
func useTempCache(t *testing.T) (dir string, private bool) {
	t.Helper()
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CACHE_HOME", filepath.Join(home, "cache"))
	if os.Getuid() == 0 {
		return CacheDir(), false
	}
	want := filepath.Join(home, "cache", "virt-sandbox")
	if got := CacheDir(); got != want {
		t.Fatalf("CacheDir() = %q with XDG_CACHE_HOME=%s, want %q", got, filepath.Join(home, "cache"), want)
	}
	return want, true
}

// readCPIO returns the entries of a cpio archive: names, modes and contents.
func readCPIO(t *testing.T, path string) (names []string, modes []cpio.FileMode, data [][]byte) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	magic := make([]byte, 6)
	if _, err := io.ReadFull(f, magic); err != nil || string(magic) != "070701" {
		t.Fatalf("%s starts with %q, %v, want the newc magic 070701", path, magic, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	cr := cpio.NewReader(f)
	for {
		h, err := cr.Next()
		if err == io.EOF {
			return names, modes, data
		}
		if err != nil {
			t.Fatalf("reading %s: %v", path, err)
		}
		b, err := io.ReadAll(cr)
		if err != nil {
			t.Fatalf("reading %s in %s: %v", h.Name, path, err)
		}
		names, modes, data = append(names, h.Name), append(modes, h.Mode), append(data, b)
	}
}

func TestQEMUPrepare(t *testing.T) {
	cacheDir, private := useTempCache(t)
	m := newFakeMachine(t)
	embedRoot := t.TempDir()
	caller := &owner{uid: os.Getuid(), gid: os.Getgid()}
	// Root's cache is the real one: take away what this test adds to it.
	made := map[string]bool{}
	if !private {
		t.Cleanup(func() {
			for p := range made {
				os.Remove(p)
			}
		})
	}
	for _, tt := range []struct {
		name      string
		uri       string
		root      string
		debug     bool
		memMiB    uint64
		wantMem   uint64
		wantRunAs *owner
	}{
		{name: "session", uri: "qemu:///session", wantMem: defaultMemoryMiB},
		{name: "session debug, own root", uri: "qemu:///session", root: "/srv/root", debug: true, memMiB: 2048, wantMem: 2048},
		// QEMU of the system instance runs as the caller, so the shares
		// are read with the caller's rights.
		{name: "system", uri: "qemu:///system", wantMem: defaultMemoryMiB, wantRunAs: caller},
		{name: "system over unix", uri: "qemu+unix:///system", wantMem: defaultMemoryMiB, wantRunAs: caller},
		{name: "embed", uri: "qemu:///embed?root=" + embedRoot, wantMem: defaultMemoryMiB, wantRunAs: caller},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if strings.Contains(tt.uri, ":///system") && checkQEMUStateDir(true) != nil {
				t.Skipf("checkQEMUStateDir(true) = %v on this host", checkQEMUStateDir(true))
			}
			cfg := testConfig(config.QEMU, tt.uri)
			cfg.Root, cfg.Debug = tt.root, tt.debug
			// The type is set, so that no KVM probe runs.
			cfg.Kernel = config.Kernel{Path: m.kernel, ModulesDir: m.modRoot, VirtType: "qemu", MemoryMiB: tt.memMiB}
			var stderr bytes.Buffer
			stateDir := t.TempDir()
			r := &run{cfg: cfg, stateDir: stateDir, initPath: m.init, io: IO{Stderr: &stderr}}
			p, err := qemuDriver{}.prepare(r)
			if err != nil {
				t.Fatalf("prepare() = %v", err)
			}
			made[p.kernel], made[p.initrd] = true, true
			if p.virtType != "qemu" || p.memoryMiB != tt.wantMem || p.stateDir != stateDir || p.remote || p.shares.fs != guest.NinePShares {
				t.Errorf("prepare() = %+v, want type qemu, %d MiB, state %s, local, 9p", p, tt.wantMem, stateDir)
			}
			if !reflect.DeepEqual(p.runAs, tt.wantRunAs) {
				t.Errorf("prepare(%s).runAs = %+v, want %+v", tt.uri, p.runAs, tt.wantRunAs)
			}
			checkBootFiles(t, m, p, cacheDir, private, tt.root != "")
			if tt.debug && !strings.Contains(stderr.String(), fakeKernelVersion) {
				t.Errorf("prepare() with debug wrote %q, want the kernel version %s in it", stderr.String(), fakeKernelVersion)
			}
		})
	}
}

// checkBootFiles checks the kernel and initrd of plan p, prepared for
// the fake machine m: the initrd holds the init and the modules the
// config needs (overlay for a custom root), each after its dependencies.
func checkBootFiles(t *testing.T, m *fakeMachine, p *plan, cacheDir string, private, overlay bool) {
	t.Helper()
	// The kernel is the caller's copy: libvirt chowns what QEMU is
	// given, and must not do so to the host's /boot.
	if p.kernel == m.kernel {
		t.Errorf("prepare() kernel = %s, want a cached copy of it", p.kernel)
	}
	for _, f := range []string{p.kernel, p.initrd} {
		if private && !strings.HasPrefix(f, cacheDir+string(filepath.Separator)) {
			t.Errorf("prepare() boot file %s, want it in %s", f, cacheDir)
		}
	}
	if b, err := os.ReadFile(p.kernel); err != nil || !bytes.Equal(b, m.kernImg) {
		t.Errorf("kernel %s = %d bytes, %v, want the %d bytes of %s", p.kernel, len(b), err, len(m.kernImg), m.kernel)
	}
	names, modes, data := readCPIO(t, p.initrd)
	wantNames := append([]string{"modules", "init"}, wantInitrdModules...)
	if overlay {
		wantNames = append(wantNames, "modules/009-overlay.ko")
	}
	if !slices.Equal(names, wantNames) {
		t.Fatalf("initrd %s holds %q, want %q", p.initrd, names, wantNames)
	}
	for i, n := range names {
		var wantMode cpio.FileMode
		var want []byte
		switch {
		case i == 0:
			wantMode = cpio.TypeDir | 0o755
		case n == "init":
			wantMode, want = cpio.TypeReg|0o755, m.initImg
		default:
			_, base, _ := strings.Cut(filepath.Base(n), "-")
			wantMode, want = cpio.TypeReg|0o644, m.modules[base]
		}
		if modes[i] != wantMode || !bytes.Equal(data[i], want) {
			t.Errorf("initrd entry %s = mode %v, %q, want mode %v, %q", n, modes[i], data[i], wantMode, want)
		}
	}
}

func TestQEMUPrepareErrors(t *testing.T) {
	useTempCache(t)
	m := newFakeMachine(t)
	// A tree without 9p: the sandbox could not mount its root.
	no9p := t.TempDir()
	if err := os.WriteFile(filepath.Join(no9p, "modules.dep"), []byte("kernel/drivers/virtio/virtio_pci.ko:\nkernel/drivers/char/virtio_console.ko:\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		k    config.Kernel
		want []string
	}{
		{name: "no kernel", k: config.Kernel{Path: filepath.Join(m.modRoot, "vmlinuz-missing"), ModulesDir: m.modRoot}, want: []string{"vmlinuz-missing"}},
		{name: "no 9p", k: config.Kernel{Path: m.kernel, ModulesDir: no9p}, want: []string{fakeKernelVersion, "9p"}},
	} {
		cfg := testConfig(config.QEMU, "qemu:///session")
		cfg.Kernel = tt.k
		cfg.Kernel.VirtType = "qemu"
		_, err := qemuDriver{}.prepare(&run{cfg: cfg, stateDir: t.TempDir(), initPath: m.init, io: IO{Stderr: io.Discard}})
		if err == nil {
			t.Errorf("prepare(%s) = nil error, want one naming %q", tt.name, tt.want)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("prepare(%s) = %q, want it to name %q", tt.name, err, w)
			}
		}
	}
}

func TestLXCRoot(t *testing.T) {
	for _, root := range []string{"", "/srv/root"} {
		cfg := testConfig(config.LXC, "lxc:///")
		cfg.Root = root
		r := &run{cfg: cfg, stateDir: t.TempDir(), initPath: "/init"}
		got, init, err := r.lxcRoot()
		if err != nil {
			t.Fatalf("lxcRoot(root %q) = %v", root, err)
		}
		// libvirt makes a directory in the root it is given: a custom
		// root gets a skeleton of ours, with the mount points.
		want := "/"
		if root != "" {
			want = filepath.Join(r.stateDir, "skeleton")
			for _, d := range guest.RootMountPoints {
				if err := isDir(filepath.Join(want, d)); err != nil {
					t.Errorf("lxcRoot(root %q): skeleton lacks %s: %v", root, d, err)
				}
			}
		}
		if got != want || init != "/init" {
			t.Errorf("lxcRoot(root %q) = %s, %s, want %s, /init", root, got, init, want)
		}
	}
}
