package sandbox

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/cavaliergopher/cpio"
	"libvirt.org/go/libvirtxml"

	"github.com/virt-sandbox/virt-sandbox/config"
	"github.com/virt-sandbox/virt-sandbox/config/guest"
)

// roundTrip marshals d and parses the XML back, so the tests check what
// libvirt is given rather than the Go structure that describes it.
func roundTrip(t *testing.T, d *libvirtxml.Domain) *libvirtxml.Domain {
	t.Helper()
	x, err := d.Marshal()
	if err != nil {
		t.Fatalf("Domain.Marshal() = %v", err)
	}
	var got libvirtxml.Domain
	if err := got.Unmarshal(x); err != nil {
		t.Fatalf("Domain.Unmarshal(%s) = %v", x, err)
	}
	return &got
}

func testConfig(drv config.Driver, uri string) *config.Sandbox {
	return &config.Sandbox{
		Version: config.Version,
		Name:    "sandbox-test",
		UUID:    "0b7e3a8c-5d1f-4e2a-9c3b-7f6e5d4c3b2a",
		Driver:  drv,
		URI:     uri,
		Command: config.Command{Argv: []string{"/bin/true"}},
	}
}

// fsDesc is the part of a filesystem that matters to the sandbox, in a form
// that compares and prints well.
type fsDesc struct {
	Mount, RAM, Target, Driver string
	// MultiDevs is how a 9p share keeps files of different host
	// filesystems apart.
	MultiDevs string
	ReadOnly  bool
}

func describeFS(fs []libvirtxml.DomainFilesystem) []fsDesc {
	var out []fsDesc
	for _, f := range fs {
		var d fsDesc
		if f.Source != nil && f.Source.Mount != nil {
			d.Mount = f.Source.Mount.Dir
		}
		if f.Source != nil && f.Source.RAM != nil {
			d.RAM = fmt.Sprintf("%d %s", f.Source.RAM.Usage, f.Source.RAM.Units)
		}
		if f.Target != nil {
			d.Target = f.Target.Dir
		}
		if f.Driver != nil {
			d.Driver = f.Driver.Type
		}
		d.MultiDevs = f.MultiDevs
		d.ReadOnly = f.ReadOnly != nil
		out = append(out, d)
	}
	return out
}

func TestLXCDomain(t *testing.T) {
	for _, tt := range []struct {
		name     string
		root     string
		memMiB   uint64
		vcpus    uint
		wantRoot string
		wantMem  uint
	}{
		{name: "host root", wantRoot: "/", wantMem: uint(hostMemoryMiB())},
		// A custom root is shared on a stage; libvirt gets a skeleton,
		// since it makes a directory in the root it is given.
		{name: "own root", root: "/srv/root", memMiB: 300, vcpus: 2, wantRoot: "skeleton", wantMem: 300},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(config.LXC, "lxc:///")
			cfg.Root = tt.root
			cfg.Kernel.MemoryMiB = tt.memMiB
			cfg.Kernel.VCPUs = tt.vcpus
			r := &run{cfg: cfg, stateDir: t.TempDir(), initPath: "/usr/libexec/virt-sandbox/virt-sandbox-init"}
			if tt.wantRoot == "skeleton" {
				tt.wantRoot = filepath.Join(r.stateDir, "skeleton")
			}
			d, err := lxcDriver{}.domain(cfg, r)
			if err != nil {
				t.Fatalf("lxcDriver.domain() = %v", err)
			}
			d = roundTrip(t, d)

			if d.Type != "lxc" || d.Name != cfg.Name || d.UUID != cfg.UUID {
				t.Errorf("lxcDriver.domain() = type %q, name %q, uuid %q, want lxc, %q, %q", d.Type, d.Name, d.UUID, cfg.Name, cfg.UUID)
			}
			if d.OS == nil || d.OS.Type == nil || d.OS.Type.Type != "exe" || d.OS.Init != guest.Init || !reflect.DeepEqual(d.OS.InitArgs, []string{guest.LXCArg}) {
				t.Errorf("lxcDriver.domain().OS = %+v, want type exe, init %s, initarg lxc", d.OS, guest.Init)
			}
			// Without privnet the container shares the host's network.
			if d.Features == nil || d.Features.PrivNet == nil {
				t.Errorf("lxcDriver.domain().Features = %+v, want privnet", d.Features)
			}
			// libvirt mounts in order: /run must come before the binds
			// inside it, or it hides them.
			want := []fsDesc{
				{Mount: tt.wantRoot, Target: "/", ReadOnly: true},
				{RAM: "64 MiB", Target: "/run"},
				{Mount: r.stateDir, Target: guest.Dir, ReadOnly: true},
				{Mount: r.initPath, Target: guest.Init, ReadOnly: true},
			}
			if tt.root != "" {
				want = append(want, fsDesc{Mount: tt.root, Target: guest.Root, ReadOnly: true})
			}
			if d.Devices == nil {
				t.Fatalf("lxcDriver.domain().Devices = nil, want filesystems and consoles")
			}
			if got := describeFS(d.Devices.Filesystems); !reflect.DeepEqual(got, want) {
				t.Errorf("lxcDriver.domain() filesystems = %+v, want %+v", got, want)
			}
			for i, f := range d.Devices.Filesystems {
				if f.AccessMode != "passthrough" {
					t.Errorf("lxcDriver.domain() filesystem %d accessmode = %q, want passthrough", i, f.AccessMode)
				}
			}
			// The first console is the log, the second the app channel.
			if n := len(d.Devices.Consoles); n != 2 {
				t.Fatalf("lxcDriver.domain() has %d consoles, want 2", n)
			}
			for i, c := range d.Devices.Consoles {
				if c.Source == nil || c.Source.Pty == nil {
					t.Errorf("lxcDriver.domain() console %d = %+v, want a pty", i, c)
				}
			}
			if d.OnPoweroff != "destroy" || d.OnReboot != "destroy" || d.OnCrash != "destroy" {
				t.Errorf("lxcDriver.domain() on_poweroff/reboot/crash = %q/%q/%q, want destroy for all", d.OnPoweroff, d.OnReboot, d.OnCrash)
			}
			if d.Memory == nil || d.Memory.Value != tt.wantMem || d.Memory.Unit != "MiB" {
				t.Errorf("lxcDriver.domain().Memory = %+v, want %d MiB", d.Memory, tt.wantMem)
			}
			if tt.vcpus == 0 && d.VCPU != nil {
				t.Errorf("lxcDriver.domain().VCPU = %+v, want none when not asked", d.VCPU)
			}
			if tt.vcpus != 0 && (d.VCPU == nil || d.VCPU.Value != tt.vcpus) {
				t.Errorf("lxcDriver.domain().VCPU = %+v, want %d", d.VCPU, tt.vcpus)
			}
		})
	}
}

func TestSecLabel(t *testing.T) {
	for _, tt := range []struct {
		label, value string
		want         []libvirtxml.DomainSecLabel
	}{
		// Dynamic is libvirt's own default: nothing to say.
		{label: "", want: nil},
		{label: "dynamic", want: nil},
		{label: "inherit", want: []libvirtxml.DomainSecLabel{{Type: "none"}}},
		{label: "static", value: "system_u:system_r:svirt_t:s0:c412,c355", want: []libvirtxml.DomainSecLabel{{Type: "static", Label: "system_u:system_r:svirt_t:s0:c412,c355", Relabel: "no"}}},
	} {
		cfg := testConfig(config.LXC, "lxc:///")
		cfg.Security = config.Security{Label: tt.label, Value: tt.value}
		if got := baseDomain(cfg, "lxc", 64).SecLabel; !reflect.DeepEqual(got, tt.want) {
			t.Errorf("baseDomain(label %q).SecLabel = %+v, want %+v", tt.label, got, tt.want)
		}
		// The driver must keep it and it must survive the XML.
		d, err := lxcDriver{}.domain(cfg, &run{cfg: cfg, stateDir: "/state", initPath: "/init"})
		if err != nil {
			t.Fatalf("lxcDriver.domain(label %q) = %v", tt.label, err)
		}
		if got := roundTrip(t, d).SecLabel; !reflect.DeepEqual(got, tt.want) {
			t.Errorf("lxcDriver.domain(label %q) seclabel = %+v, want %+v", tt.label, got, tt.want)
		}
	}
}

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

func TestQEMUDomain(t *testing.T) {
	cacheDir, private := useTempCache(t)
	m := newFakeMachine(t)
	stateDir := t.TempDir()
	embedRoot := t.TempDir()
	dac := libvirtxml.DomainSecLabel{Type: "static", Model: "dac", Relabel: "yes", Label: fmt.Sprintf("+%d:+%d", os.Getuid(), os.Getgid())}
	static := libvirtxml.DomainSecLabel{Type: "static", Label: "system_u:system_r:svirt_t:s0:c1,c2", Relabel: "no"}
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
		name     string
		uri      string
		root     string
		debug    bool
		cmdline  string
		memMiB   uint64
		virtType string
		security config.Security
		wantType string
		wantMem  uint
		wantSec  []libvirtxml.DomainSecLabel
	}{
		{name: "session", uri: "qemu:///session", wantType: "qemu", wantMem: defaultMemoryMiB},
		{name: "session debug", uri: "qemu:///session", debug: true, wantType: "qemu", wantMem: defaultMemoryMiB},
		{name: "cmdline", uri: "qemu:///session", cmdline: "systemd.log_level=debug foo=bar", memMiB: 2048, wantType: "qemu", wantMem: 2048},
		{name: "kvm", uri: "qemu:///session", root: "/srv/root", virtType: "kvm", wantType: "kvm", wantMem: defaultMemoryMiB},
		// QEMU of the system instance runs as the caller, so the shares
		// are read with the caller's rights.
		{name: "system", uri: "qemu:///system", wantType: "qemu", wantMem: defaultMemoryMiB, wantSec: []libvirtxml.DomainSecLabel{dac}},
		{name: "system over unix", uri: "qemu+unix:///system", wantType: "qemu", wantMem: defaultMemoryMiB, wantSec: []libvirtxml.DomainSecLabel{dac}},
		{name: "system static", uri: "qemu:///system", security: config.Security{Label: "static", Value: static.Label}, wantType: "qemu", wantMem: defaultMemoryMiB, wantSec: []libvirtxml.DomainSecLabel{static, dac}},
		{name: "embed", uri: "qemu:///embed?root=" + embedRoot, wantType: "qemu", wantMem: defaultMemoryMiB, wantSec: []libvirtxml.DomainSecLabel{dac}},
		{name: "session inherit", uri: "qemu:///session", security: config.Security{Label: "inherit"}, wantType: "qemu", wantMem: defaultMemoryMiB, wantSec: []libvirtxml.DomainSecLabel{{Type: "none"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if strings.Contains(tt.uri, ":///system") && checkQEMUStateDir(true) != nil {
				t.Skipf("checkQEMUStateDir(true) = %v on this host", checkQEMUStateDir(true))
			}
			cfg := testConfig(config.QEMU, tt.uri)
			cfg.Root = tt.root
			cfg.Debug = tt.debug
			cfg.Security = tt.security
			virtType := tt.virtType
			if virtType == "" {
				// Set, so that no KVM probe runs.
				virtType = "qemu"
			}
			cfg.Kernel = config.Kernel{Path: m.kernel, ModulesDir: m.modRoot, VirtType: virtType, MemoryMiB: tt.memMiB, Cmdline: tt.cmdline}
			var stderr bytes.Buffer
			r := &run{cfg: cfg, stateDir: stateDir, initPath: m.init, io: IO{Stderr: &stderr}}
			d, err := qemuDriver{}.domain(cfg, r)
			if err != nil {
				t.Fatalf("qemuDriver.domain() = %v", err)
			}
			if d.OS != nil {
				made[d.OS.Kernel], made[d.OS.Initrd] = true, true
			}
			d = roundTrip(t, d)

			if d.Type != tt.wantType || d.Name != cfg.Name || d.UUID != cfg.UUID {
				t.Errorf("qemuDriver.domain() = type %q, name %q, uuid %q, want %s, %q, %q", d.Type, d.Name, d.UUID, tt.wantType, cfg.Name, cfg.UUID)
			}
			if d.OS == nil || d.OS.Type == nil || d.OS.Type.Type != "hvm" {
				t.Fatalf("qemuDriver.domain().OS = %+v, want os type hvm", d.OS)
			}
			if d.Features == nil || d.Features.ACPI == nil {
				t.Errorf("qemuDriver.domain().Features = %+v, want acpi", d.Features)
			}
			if wantCPU := virtType == "kvm"; (d.CPU != nil && d.CPU.Mode == "host-passthrough") != wantCPU {
				t.Errorf("qemuDriver.domain().CPU = %+v, want host-passthrough: %v", d.CPU, wantCPU)
			}

			// The kernel is the caller's copy: libvirt chowns what QEMU
			// is given, and must not do so to the host's /boot.
			if d.OS.Kernel == m.kernel {
				t.Errorf("qemuDriver.domain() kernel = %s, want a cached copy of it", d.OS.Kernel)
			}
			if private && !strings.HasPrefix(d.OS.Kernel, cacheDir+string(filepath.Separator)) {
				t.Errorf("qemuDriver.domain() kernel = %s, want it in %s", d.OS.Kernel, cacheDir)
			}
			if b, err := os.ReadFile(d.OS.Kernel); err != nil || !bytes.Equal(b, m.kernImg) {
				t.Errorf("kernel %s = %d bytes, %v, want the %d bytes of %s", d.OS.Kernel, len(b), err, len(m.kernImg), m.kernel)
			}

			if private && !strings.HasPrefix(d.OS.Initrd, cacheDir+string(filepath.Separator)) {
				t.Errorf("qemuDriver.domain() initrd = %s, want it in %s", d.OS.Initrd, cacheDir)
			}
			names, modes, data := readCPIO(t, d.OS.Initrd)
			wantNames := append([]string{"modules", "init"}, wantInitrdModules...)
			if tt.root != "" {
				// A custom root may lack mount points.
				wantNames = append(wantNames, "modules/009-overlay.ko")
			}
			if !slices.Equal(names, wantNames) {
				t.Fatalf("initrd %s holds %q, want %q", d.OS.Initrd, names, wantNames)
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

			args := strings.Fields(d.OS.Cmdline)
			if want := []string{"console=ttyS0", "panic=-1", "rdinit=/init"}; len(args) < len(want) || !slices.Equal(args[:len(want)], want) {
				t.Errorf("qemuDriver.domain() cmdline = %q, want it to start with %q", d.OS.Cmdline, want)
			}
			if got := slices.Contains(args, "quiet"); got == tt.debug {
				t.Errorf("qemuDriver.domain(debug %v) cmdline = %q, want quiet: %v", tt.debug, d.OS.Cmdline, !tt.debug)
			}
			if got := slices.Contains(args, "LIBVIRT_SANDBOX_INIT_DEBUG=1"); got != tt.debug {
				t.Errorf("qemuDriver.domain(debug %v) cmdline = %q, want LIBVIRT_SANDBOX_INIT_DEBUG=1: %v", tt.debug, d.OS.Cmdline, tt.debug)
			}
			// Last, so the caller's arguments win over ours.
			if tt.cmdline != "" && !strings.HasSuffix(d.OS.Cmdline, " "+tt.cmdline) {
				t.Errorf("qemuDriver.domain() cmdline = %q, want it to end with %q", d.OS.Cmdline, tt.cmdline)
			}

			if d.Devices == nil {
				t.Fatalf("qemuDriver.domain().Devices = nil, want devices")
			}
			wantRoot := tt.root
			if wantRoot == "" {
				wantRoot = "/"
			}
			wantFS := []fsDesc{
				{Mount: wantRoot, Target: guest.RootTag, Driver: "path", MultiDevs: "remap", ReadOnly: true},
				{Mount: stateDir, Target: guest.ConfigTag, Driver: "path", MultiDevs: "remap", ReadOnly: true},
			}
			if got := describeFS(d.Devices.Filesystems); !reflect.DeepEqual(got, wantFS) {
				t.Errorf("qemuDriver.domain() filesystems = %+v, want %+v", got, wantFS)
			}
			// The log console is always kept in the state directory: a
			// pty with a log when followed (-d), a plain file otherwise.
			logPath := filepath.Join(stateDir, consoleLog)
			s := d.Devices.Serials
			switch {
			case len(s) != 1 || s[0].Source == nil:
				t.Errorf("qemuDriver.domain() serials = %+v, want one", s)
			case cfg.Debug && (s[0].Source.Pty == nil || s[0].Log == nil || s[0].Log.File != logPath):
				t.Errorf("qemuDriver.domain() serial = %+v, want a pty logging to %s", s[0], logPath)
			case !cfg.Debug && (s[0].Source.File == nil || s[0].Source.File.Path != logPath):
				t.Errorf("qemuDriver.domain() serial = %+v, want the file %s", s[0], logPath)
			}
			// OpenChannel only works on a UNIX socket.
			if c := d.Devices.Channels; len(c) != 1 || c[0].Source == nil || c[0].Source.UNIX == nil || c[0].Target == nil || c[0].Target.VirtIO == nil || c[0].Target.VirtIO.Name != guest.AppChannel {
				t.Errorf("qemuDriver.domain() channels = %+v, want one virtio channel %s on a UNIX socket", c, guest.AppChannel)
			}
			if b := d.Devices.MemBalloon; b == nil || b.Model != "none" {
				t.Errorf("qemuDriver.domain() memballoon = %+v, want model none", b)
			}
			if d.Memory == nil || d.Memory.Value != tt.wantMem || d.Memory.Unit != "MiB" {
				t.Errorf("qemuDriver.domain().Memory = %+v, want %d MiB", d.Memory, tt.wantMem)
			}
			if !reflect.DeepEqual(d.SecLabel, tt.wantSec) {
				t.Errorf("qemuDriver.domain(%s, %+v).SecLabel = %+v, want %+v", tt.uri, tt.security, d.SecLabel, tt.wantSec)
			}
			if tt.debug && !strings.Contains(stderr.String(), fakeKernelVersion) {
				t.Errorf("qemuDriver.domain() with debug wrote %q, want the kernel version %s in it", stderr.String(), fakeKernelVersion)
			}
		})
	}
}

func TestQEMUDomainErrors(t *testing.T) {
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
		_, err := qemuDriver{}.domain(cfg, &run{cfg: cfg, stateDir: t.TempDir(), initPath: m.init, io: IO{Stderr: io.Discard}})
		if err == nil {
			t.Errorf("qemuDriver.domain(%s) = nil error, want one naming %q", tt.name, tt.want)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("qemuDriver.domain(%s) = %q, want it to name %q", tt.name, err, w)
			}
		}
	}
}

func TestIsEmbedded(t *testing.T) {
	for _, tt := range []struct {
		uri  string
		want bool
	}{
		{"qemu:///embed?root=/tmp/x", true},
		{"qemu+unix:///embed?root=/tmp/x", true},
		{"qemu:///system", false},
		{"qemu:///session", false},
		{"qemu+ssh://host/embed", false},
		{"lxc:///", false},
	} {
		if got := isEmbedded(tt.uri); got != tt.want {
			t.Errorf("isEmbedded(%q) = %v, want %v", tt.uri, got, tt.want)
		}
	}
}

func TestPrepareEmbedRoot(t *testing.T) {
	// A root that does not exist yet: the driver makes it, we make etc.
	root := filepath.Join(t.TempDir(), "embed")
	conf := filepath.Join(root, "etc", "qemu.conf")
	if err := prepareEmbedRoot("qemu:///embed?root=" + root); err != nil {
		t.Fatalf("prepareEmbedRoot(root=%s) = %v", root, err)
	}
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatalf("prepareEmbedRoot(root=%s) wrote no %s: %v", root, conf, err)
	}
	if !strings.Contains(string(b), "stdio_handler = \"file\"\n") {
		t.Errorf("prepareEmbedRoot(root=%s) wrote %q, want stdio_handler = \"file\"", root, b)
	}
	// The file is the user's once it exists: theirs to change.
	mine := []byte("stdio_handler = \"logd\"\n")
	if err := os.WriteFile(conf, mine, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := prepareEmbedRoot("qemu:///embed?root=" + root); err != nil {
		t.Fatalf("prepareEmbedRoot(root=%s) again = %v", root, err)
	}
	if b, _ := os.ReadFile(conf); !bytes.Equal(b, mine) {
		t.Errorf("prepareEmbedRoot(root=%s) over an existing qemu.conf left %q, want %q untouched", root, b, mine)
	}

	for _, uri := range []string{"qemu:///embed", "qemu:///embed?root=", "qemu:///embed?other=/x"} {
		if err := prepareEmbedRoot(uri); !errors.Is(err, config.ErrInvalid) || !strings.Contains(fmt.Sprint(err), "root=") {
			t.Errorf("prepareEmbedRoot(%q) = %v, want an error wrapping config.ErrInvalid that asks for root=", uri, err)
		}
	}
}
