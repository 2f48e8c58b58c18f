package sandbox

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/virt-sandbox/virt-sandbox/config"
	"github.com/virt-sandbox/virt-sandbox/kmod"
	"github.com/virt-sandbox/virt-sandbox/sandbox/initrd"
	"github.com/virt-sandbox/virt-sandbox/sandbox/kvm"
)

// fastBoot are kernel arguments that skip what a sandbox never needs and
// costs most under TCG: TSC and timer checks, PS/2 probing, spare serial
// ports, crypto self-tests. Measured here: 5.2 s to 4.9 s for /bin/true.
var fastBoot = []string{"tsc=reliable", "no_timer_check", "i8042.noaux", "i8042.nokbd", "i8042.nopnp", "8250.nr_uarts=1", "cryptomgr.notests"}

// qemuDriver runs sandboxes as QEMU machines booting the host's kernel with
// our init as PID 1.
type qemuDriver struct{}

// ConsoleLog is the serial console's log in the state directory.
const ConsoleLog = "console.log"

// DefaultMemoryMiB is a QEMU sandbox's memory unless --memory says.
const DefaultMemoryMiB = 512

// baseModules are what every QEMU sandbox needs: the PCI transport, the
// app channel, the 9p shares (the config share always is one), and
// entropy: without a hardware source, getrandom blocks for minutes under
// TCG (DHCP, TLS, Python all wait).
var baseModules = []string{"virtio_pci", "virtio_console", "9p", "9pnet_virtio", "virtio_rng"}

// fsModules are the modules of the filesystems fsimage finds. ext4 wants
// crc32c, which modules.dep does not list (it is a soft dependency), and
// its generic implementation works on any CPU.
var fsModules = map[string][]string{
	"ext4":     {"crc32c_generic", "ext4"},
	"xfs":      {"crc32c_generic", "xfs"},
	"btrfs":    {"crc32c_generic", "btrfs"},
	"vfat":     {"vfat", "nls_cp437", "nls_iso8859_1"},
	"iso9660":  {"isofs"},
	"squashfs": {"squashfs"},
}

// serialConsole is the machine's log console, always kept in logPath. It
// is a pty, which -d follows live, only when debugging or for a service
// (connect): QEMU stalls a guest writing to a pty nobody has open.
func serialConsole(cfg *config.Sandbox, logPath string) libvirtxml.DomainSerial {
	if cfg.Debug || cfg.Service != nil {
		return libvirtxml.DomainSerial{
			Source: &libvirtxml.DomainChardevSource{Pty: &libvirtxml.DomainChardevSourcePty{}},
			Log:    &libvirtxml.DomainChardevLog{File: logPath, Append: "off"},
		}
	}
	return libvirtxml.DomainSerial{
		Source: &libvirtxml.DomainChardevSource{File: &libvirtxml.DomainChardevSourceFile{Path: logPath}},
	}
}

// ninePShare is a 9p export of the host directory src. The directory may
// span several host filesystems (the host's / holds /proc, /sys, /dev, /run
// and more), whose inode numbers overlap: every filesystem's root is inode
// 1 or 2. 9p names a file by its inode alone (its qid), so the guest would
// take /proc and /sys for one directory and any two files of the same inode
// on different filesystems for one file. multidevs=remap makes QEMU fold
// the device into the qid, so qids are unique across the export.
func ninePShare(src, tag string, readonly bool) libvirtxml.DomainFilesystem {
	f := bindFS(src, tag, readonly)
	f.Driver = &libvirtxml.DomainFilesystemDriver{Type: "path"}
	f.MultiDevs = "remap"
	return f
}

// writableShare is a 9p share the sandbox writes to.
func writableShare(src, tag string) libvirtxml.DomainFilesystem {
	f := ninePShare(src, tag, false)
	if os.Getuid() != 0 {
		// QEMU runs as the caller and cannot give files away: new
		// files are the caller's.
		f.AccessMode = "squash"
	}
	return f
}

// modulesFor chooses the modules the config needs, so a plain sandbox
// loads only the base set. fs is how host directories are shared.
func modulesFor(cfg *config.Sandbox, fs string) []string {
	mods := append([]string(nil), baseModules...)
	if fs == config.VirtiofsShares {
		mods = append(mods, "virtiofs")
	}
	if len(cfg.Mounts) > 0 || cfg.WritableRoot || cfg.Root != "" {
		// The init may lay an overlay over the root for mount points,
		// which a custom root may lack.
		mods = append(mods, "overlay")
	}
	blk := len(cfg.Disks) > 0
	for _, m := range cfg.Mounts {
		if m.Type == config.HostImage {
			blk = true
			mods = append(mods, fsModules[m.FSType]...)
		}
	}
	if len(cfg.Disks) > 0 {
		// What a disk is most often formatted with inside.
		mods = append(mods, fsModules["ext4"]...)
	}
	if blk {
		mods = append(mods, "virtio_blk")
	}
	if len(cfg.Networks) > 0 {
		mods = append(mods, "virtio_net")
	}
	return mods
}

func (qemuDriver) domain(cfg *config.Sandbox, r *run) (*libvirtxml.Domain, error) {
	kern, err := findKernel(cfg.Kernel)
	if err != nil {
		return nil, err
	}
	r.debugf("kernel %s (version %s), modules from %s", kern.path, kern.version, kern.modules)
	tree, err := kmod.Open(kern.modules)
	if err != nil {
		return nil, err
	}
	readOnlyDaemon, lacking := virtiofsDaemons()
	if _, err := tree.Resolve("virtiofs"); err != nil && lacking == nil {
		lacking = fmt.Errorf("the guest kernel's modules lack it: %w", err)
	}
	fs, err := shareFS(cfg, os.Getuid(), lacking)
	if err != nil {
		return nil, err
	}
	r.debugf("host directories shared by %s", fs)
	mods, err := tree.Resolve(modulesFor(cfg, fs)...)
	if err != nil {
		return nil, fmt.Errorf("kernel modules of %s: %w", kern.version, err)
	}
	rd, err := initrd.Cached(filepath.Join(CacheDir(), "initrd"), r.initPath, mods)
	if err != nil {
		return nil, err
	}
	if rd.Damaged {
		r.debugf("the cached initrd was damaged; rebuilt")
	}
	if rd.Built {
		r.debugf("initrd built in %v: %s", rd.Elapsed.Round(1e6), rd.Path)
	} else {
		r.debugf("initrd cached: %s", rd.Path)
	}

	kernPath, err := cachedKernel(filepath.Join(CacheDir(), "kernel"), kern.path)
	if err != nil {
		return nil, err
	}

	virtType := cfg.Kernel.VirtType
	if virtType == "" {
		virtType = "qemu"
		if ok, reason := kvm.Usable(CacheDir()); ok {
			virtType = "kvm"
		} else {
			r.debugf("KVM not usable (%s): using TCG", reason)
		}
	}
	mem := cfg.Kernel.MemoryMiB
	if mem == 0 {
		mem = DefaultMemoryMiB
	}
	d := baseDomain(cfg, virtType, mem)
	cmdline := append([]string{"console=ttyS0", "panic=-1", "rdinit=/init", config.SharesArg + "=" + fs}, fastBoot...)
	if cfg.Debug {
		cmdline = append(cmdline, "LIBVIRT_SANDBOX_INIT_DEBUG=1")
	} else {
		cmdline = append(cmdline, "quiet", "loglevel=1")
	}
	if cfg.Kernel.Cmdline != "" {
		cmdline = append(cmdline, cfg.Kernel.Cmdline)
	}
	d.OS = &libvirtxml.DomainOS{
		Type:    &libvirtxml.DomainOSType{Arch: "x86_64", Type: "hvm"},
		Kernel:  kernPath,
		Initrd:  rd.Path,
		Cmdline: strings.Join(cmdline, " "),
	}
	d.Features = &libvirtxml.DomainFeatureList{ACPI: &libvirtxml.DomainFeature{}}
	if virtType == "kvm" {
		d.CPU = &libvirtxml.DomainCPU{Mode: "host-passthrough"}
	}
	if system := strings.Contains(cfg.URI, ":///system"); system || isEmbedded(cfg.URI) {
		if err := checkQEMUStateDir(system); err != nil {
			return nil, err
		}
		// QEMU would run as libvirt-qemu and meet the shares as a stranger:
		// run it as the caller, so file access is the caller's. libvirt
		// must relabel, or QEMU cannot read libvirt's own files for it.
		d.SecLabel = append(d.SecLabel, libvirtxml.DomainSecLabel{
			Type: "static", Model: "dac", Relabel: "yes",
			Label: fmt.Sprintf("+%d:+%d", os.Getuid(), os.Getgid()),
		})
	}
	root := cfg.Root
	if root == "" {
		root = "/"
	}
	if fs == config.VirtiofsShares {
		d.MemoryBacking = sharedMemory()
	}
	host := shares{fs: fs, readOnlyDaemon: readOnlyDaemon}
	// The config share is read once, and stays 9p: a virtiofsd costs
	// boot time.
	filesystems := []libvirtxml.DomainFilesystem{host.share(root, config.RootTag, true, true), ninePShare(r.stateDir, config.ConfigTag, true)}
	var disks []libvirtxml.DomainDisk
	blk := func(src, format, serial string, readonly bool) {
		disk := libvirtxml.DomainDisk{
			Device: "disk",
			Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: format},
			Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: src}},
			Target: &libvirtxml.DomainDiskTarget{Dev: fmt.Sprintf("vd%c", 'a'+len(disks)), Bus: "virtio"},
			Serial: serial,
		}
		if readonly {
			disk.ReadOnly = &libvirtxml.DomainDiskReadOnly{}
		}
		disks = append(disks, disk)
	}
	for i, m := range cfg.Mounts {
		switch m.Type {
		case config.HostBind:
			filesystems = append(filesystems, host.share(m.Source, config.MountTag(i), m.ReadOnly, false))
		case config.HostImage:
			blk(m.Source, m.Format, config.MountTag(i), m.ReadOnly)
		}
	}
	for _, dk := range cfg.Disks {
		blk(dk.Source, dk.Format, dk.Tag, false)
	}
	if cfg.Service != nil {
		filesystems = append(filesystems, writableShare(r.logDir, config.LogTag))
	}
	ifaces, err := r.interfaces("virtio")
	if err != nil {
		return nil, err
	}
	d.Devices = &libvirtxml.DomainDeviceList{
		Interfaces:  ifaces,
		Filesystems: filesystems,
		Disks:       disks,
		Serials:     []libvirtxml.DomainSerial{serialConsole(cfg, filepath.Join(r.stateDir, ConsoleLog))},
		// OpenChannel needs the channel on a UNIX socket. Its path is
		// ours, short: the one libvirt picks grows with its own
		// directories (deep ones for session and embedded drivers) and
		// the domain's name, past the 108 bytes a socket path may have.
		Channels:   appChannels(cfg, r.stateDir),
		MemBalloon: &libvirtxml.DomainMemBalloon{Model: "none"},
		RNGs: []libvirtxml.DomainRNG{{
			Model:   "virtio",
			Backend: &libvirtxml.DomainRNGBackend{Random: &libvirtxml.DomainRNGBackendRandom{Device: "/dev/urandom"}},
		}},
		// Nothing to plug in: each device costs boot time.
		Controllers: []libvirtxml.DomainController{{Type: "usb", Model: "none"}},
	}

	return d, nil
}

// appChannels are the machine's app channels: virtio-serial ports on UNIX
// sockets in the state directory.
func appChannels(cfg *config.Sandbox, stateDir string) []libvirtxml.DomainChannel {
	var chans []libvirtxml.DomainChannel
	for i := range config.AppChannels(cfg) {
		chans = append(chans, libvirtxml.DomainChannel{
			Source: &libvirtxml.DomainChardevSource{UNIX: &libvirtxml.DomainChardevSourceUNIX{Mode: "bind", Path: appSocket(stateDir, i)}},
			Target: &libvirtxml.DomainChannelTarget{VirtIO: &libvirtxml.DomainChannelTargetVirtIO{Name: config.AppChannelName(i)}},
		})
	}
	return chans
}

// appSocket is where QEMU listens for app channel i of a machine whose
// state directory is stateDir.
func appSocket(stateDir string, i int) string {
	if i == 0 {
		return filepath.Join(stateDir, "app.sock")
	}
	return filepath.Join(stateDir, fmt.Sprintf("app%d.sock", i))
}

func (qemuDriver) openChannel(dom *libvirt.Domain, i int, st *libvirt.Stream) error {
	return dom.OpenChannel(config.AppChannelName(i), st, 0)
}

func (qemuDriver) openLog(dom *libvirt.Domain, st *libvirt.Stream) error {
	return dom.OpenConsole("serial0", st, 0)
}

// CacheDir holds what is worth keeping between runs: initrds, kernel copies
// and the KVM verdict. $VIRT_SANDBOX_CACHE_DIR, when set to an absolute
// path, chooses it for anyone.
func CacheDir() string {
	if d := os.Getenv("VIRT_SANDBOX_CACHE_DIR"); filepath.IsAbs(d) {
		return d
	}
	if os.Getuid() == 0 {
		return "/var/cache/virt-sandbox"
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "virt-sandbox")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("virt-sandbox-cache-%d", os.Getuid()))
}

// qemuStateDir is where qemu:///system keeps each domain's private files.
const qemuStateDir = "/var/lib/libvirt/qemu"

// checkQEMUStateDir tells why a QEMU running as an unprivileged caller
// would fail to start, before QEMU says it in many lines.
func checkQEMUStateDir(system bool) error {
	if !system || os.Getuid() == 0 {
		return nil
	}
	fi, err := os.Stat(qemuStateDir)
	if err == nil && fi.Mode().Perm()&0o001 == 0 {
		return fmt.Errorf("QEMU runs as the caller, who cannot reach %s (mode %04o): make it searchable with chmod o+x, as upstream libvirt installs it", qemuStateDir, fi.Mode().Perm())
	}
	return nil
}

// prepareEmbedRoot gives a new root of the embedded QEMU driver a qemu.conf
// that logs QEMU's output to files itself: its default hands logs to
// virtlogd, which the embedded driver is meant to do without.
func prepareEmbedRoot(uri string) error {
	u, err := url.Parse(uri)
	if err != nil || u.Query().Get("root") == "" {
		return fmt.Errorf("%w: -c %q: the embedded driver needs ?root=DIR", config.ErrInvalid, uri)
	}
	etc := filepath.Join(u.Query().Get("root"), "etc")
	conf := filepath.Join(etc, "qemu.conf")
	if fileExists(conf) {
		return nil
	}
	if err := os.MkdirAll(etc, 0o755); err != nil {
		return fmt.Errorf("embedded driver root: %w", err)
	}
	return os.WriteFile(conf, []byte("# Written by virt-sandbox: no virtlogd needed.\nstdio_handler = \"file\"\n"), 0o644)
}
