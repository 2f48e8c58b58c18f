package sandbox

import (
	"cmp"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/virt-sandbox/virt-sandbox/config"
	"github.com/virt-sandbox/virt-sandbox/config/guest"
	"github.com/virt-sandbox/virt-sandbox/kmod"
	"github.com/virt-sandbox/virt-sandbox/sandbox/hostdirs"
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

// consoleLog is the serial console's log in the state directory.
const consoleLog = "console.log"

// defaultMemoryMiB is a QEMU sandbox's memory unless --memory says.
const defaultMemoryMiB = 512

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

// serialConsole is the machine's log console, kept in the state
// directory's ConsoleLog on a local host. It is a pty, which -d follows
// live, only when debugging or for a service (connect): QEMU stalls a
// guest writing to a pty nobody has open. A remote host keeps no log of
// ours: its console is a pty when debugging, otherwise nothing.
func serialConsole(cfg *config.Sandbox, p *plan) libvirtxml.DomainSerial {
	logPath := filepath.Join(p.stateDir, consoleLog)
	pty := &libvirtxml.DomainChardevSource{Pty: &libvirtxml.DomainChardevSourcePty{}}
	switch {
	case p.remote && (cfg.Debug || cfg.Service != nil):
		return libvirtxml.DomainSerial{Source: pty}
	case p.remote:
		return libvirtxml.DomainSerial{Source: &libvirtxml.DomainChardevSource{Null: &libvirtxml.DomainChardevSourceNull{}}}
	case cfg.Debug || cfg.Service != nil:
		return libvirtxml.DomainSerial{
			Source: pty,
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

// writableShare is a 9p share the sandbox writes to. squash: QEMU runs
// as a caller other than root, and cannot give files away: new files are
// the caller's.
func writableShare(src, tag string, squash bool) libvirtxml.DomainFilesystem {
	f := ninePShare(src, tag, false)
	if squash {
		f.AccessMode = "squash"
	}
	return f
}

// modulesFor chooses the modules the config needs, so a plain sandbox
// loads only the base set. mountFS holds the filesystems of the host-image
// mounts; fs is how host directories are shared.
func modulesFor(cfg *config.Sandbox, mountFS map[int]string, fs string) []string {
	mods := append([]string(nil), baseModules...)
	if fs == guest.VirtiofsShares {
		mods = append(mods, "virtiofs")
	}
	if len(cfg.Mounts) > 0 || cfg.WritableRoot || cfg.Root != "" || cfg.RootImage != "" {
		// The init may lay an overlay over the root for mount points,
		// which a custom root may lack.
		mods = append(mods, "overlay")
	}
	blk := len(cfg.Disks) > 0 || cfg.RootImage != ""
	if cfg.RootImage != "" {
		mods = append(mods, fsModules[guest.RootImageFS]...)
	}
	for i, m := range cfg.Mounts {
		if m.Type == config.HostImage {
			blk = true
			mods = append(mods, fsModules[mountFS[i]]...)
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

// prepare finds, builds, uploads and probes what the machine needs, in
// the order the checks of a config meet the user: the boot files and how
// host directories are shared, the domain type, the state directory QEMU
// must reach, the root image and the networks.
func (qemuDriver) prepare(r *run) (*plan, error) {
	cfg, p := r.cfg, r.basePlan()
	var err error
	if p.kernel, p.initrd, p.shares, err = r.bootFiles(); err != nil {
		return nil, err
	}
	if p.virtType, err = r.virtType(); err != nil {
		return nil, err
	}
	p.memoryMiB = cmp.Or(cfg.Kernel.MemoryMiB, defaultMemoryMiB)
	if system := strings.Contains(cfg.URI, ":///system"); !p.remote && (system || isEmbedded(cfg.URI)) {
		if err := checkQEMUStateDir(system); err != nil {
			return nil, err
		}
		// An embedded driver of a caller who is not root has no DAC
		// driver: its QEMU is the caller's child and runs as the caller.
		if system || os.Getuid() == 0 {
			p.runAs = &owner{uid: os.Getuid(), gid: os.Getgid()}
		}
	}
	if cfg.RootImage != "" {
		if p.rootImage, err = r.rootImage(); err != nil {
			return nil, err
		}
	}
	if p.interfaces, err = r.planInterfaces(); err != nil {
		return nil, err
	}
	return p, nil
}

// describe is the machine of cfg as p planned it.
func (qemuDriver) describe(cfg *config.Sandbox, p *plan) *libvirtxml.Domain {
	d := baseDomain(cfg, p.virtType, p.memoryMiB)
	cmdline := kernelCmdline(cfg, p.remote, p.shares.fs)
	if p.template {
		cmdline = append(cmdline, templateTag)
	}
	d.OS = &libvirtxml.DomainOS{
		Type:    &libvirtxml.DomainOSType{Arch: "x86_64", Type: "hvm"},
		Kernel:  p.kernel,
		Initrd:  p.initrd,
		Cmdline: strings.Join(cmdline, " "),
	}
	if p.shares.fs == guest.VirtiofsShares {
		d.MemoryBacking = sharedMemory()
	}
	d.Features = &libvirtxml.DomainFeatureList{ACPI: &libvirtxml.DomainFeature{}}
	if p.virtType == "kvm" {
		d.CPU = &libvirtxml.DomainCPU{Mode: "host-passthrough"}
	}
	if p.runAs != nil {
		// QEMU would run as libvirt-qemu and meet the shares as a stranger:
		// run it as the caller, so file access is the caller's. libvirt
		// must relabel, or QEMU cannot read libvirt's own files for it.
		// A remote host runs QEMU as it is configured to: the caller's
		// uid means nothing there.
		d.SecLabel = append(d.SecLabel, libvirtxml.DomainSecLabel{
			Type: "static", Model: "dac", Relabel: "yes",
			Label: fmt.Sprintf("+%d:+%d", p.runAs.uid, p.runAs.gid),
		})
	}
	d.Devices = qemuDevices(cfg, p)
	return d
}

// bootFiles finds the kernel and its modules, builds the initrd (or finds
// it in the cache) and returns the paths the domain names for both: the
// caller's copies in the cache for a local host, volumes on a remote one.
// The initrd's modules are the launcher's, so a remote host boots the
// launcher's kernel too. How host directories are shared decides some of
// those modules: host says how.
func (r *run) bootFiles() (kernel, initrdPath string, host shares, err error) {
	kern, err := findKernel(r.cfg.Kernel)
	if err != nil {
		return "", "", host, err
	}
	r.debugf("kernel %s (version %s), modules from %s", kern.path, kern.version, kern.modules)
	tree, err := kmod.Open(kern.modules)
	if err != nil {
		return "", "", host, err
	}
	if host, err = r.hostShares(tree); err != nil {
		return "", "", host, err
	}
	mods, err := tree.Resolve(modulesFor(r.cfg, r.resolved.MountFS, host.fs)...)
	if err != nil {
		return "", "", host, fmt.Errorf("kernel modules of %s: %w", kern.version, err)
	}
	rd, err := initrd.Cached(filepath.Join(CacheDir(), "initrd"), r.initPath, mods)
	if err != nil {
		return "", "", host, err
	}
	if rd.Damaged {
		r.debugf("the cached initrd was damaged; rebuilt")
	}
	if rd.Built {
		r.debugf("initrd built in %v: %s", rd.Elapsed.Round(1e6), rd.Path)
	} else {
		r.debugf("initrd cached: %s", rd.Path)
	}
	if r.remote() {
		if kernel, err = r.uploadFile("kernel", kern.path, 0o644); err != nil {
			return "", "", host, err
		}
		initrdPath, err = r.uploadFile("initrd", rd.Path, 0o644)
		return kernel, initrdPath, host, err
	}
	kernel, err = cachedKernel(filepath.Join(CacheDir(), "kernel"), kern.path)
	return kernel, rd.Path, host, err
}

// hostShares chooses how host directories reach the machine: 9p, or
// virtiofs where the run asks for it and it can run (tree, the guest's
// modules, must have it).
func (r *run) hostShares(tree *kmod.Tree) (shares, error) {
	readOnlyDaemon, lacking := virtiofsDaemons()
	if _, err := tree.Resolve("virtiofs"); err != nil && lacking == nil {
		lacking = fmt.Errorf("the guest kernel's modules lack it: %w", err)
	}
	fs, err := shareFS(r.cfg, os.Getuid(), lacking)
	if err != nil {
		return shares{}, err
	}
	r.debugf("host directories shared by %s", fs)
	return shares{fs: fs, readOnlyDaemon: readOnlyDaemon, squash: os.Getuid() != 0}, nil
}

// kernelCmdline is the guest kernel's command line; arguments of the form
// KEY=VALUE the kernel does not know reach the init as its environment.
func kernelCmdline(cfg *config.Sandbox, remote bool, fs string) []string {
	cmdline := append([]string{"console=ttyS0", "panic=-1", "rdinit=/init", guest.SharesEnv + "=" + fs}, fastBoot...)
	if cfg.Debug {
		cmdline = append(cmdline, guest.DebugEnv+"=1")
	} else {
		cmdline = append(cmdline, "quiet", "loglevel=1")
	}
	if remote {
		cmdline = append(cmdline, guest.FilesEnv+"="+guest.FilesOnChannel)
	}
	if cfg.RootImage != "" {
		cmdline = append(cmdline, guest.RootFSEnv+"="+guest.RootImageFS)
	}
	if cfg.Kernel.Cmdline != "" {
		cmdline = append(cmdline, cfg.Kernel.Cmdline)
	}
	return cmdline
}

// virtType is the domain type: --virt-type, else KVM where it really
// works.
func (r *run) virtType() (string, error) {
	if t := r.cfg.Kernel.VirtType; t == "kvm" && !r.remote() {
		if err := unix.Access(kvm.Device, unix.R_OK|unix.W_OK); err != nil {
			return "", fmt.Errorf("--virt-type kvm: %s: %v (it takes group kvm; without --virt-type, QEMU uses TCG)", kvm.Device, err)
		}
	}
	if t := r.cfg.Kernel.VirtType; t != "" {
		return t, nil
	}
	if r.remote() {
		return remoteVirtType(r)
	}
	if ok, reason := kvm.Usable(CacheDir()); !ok {
		r.debugf("KVM not usable (%s): using TCG", reason)
		return "qemu", nil
	}
	return "kvm", nil
}

// qemuDevices are the machine's devices: the shares, disks, interfaces,
// consoles and channels.
func qemuDevices(cfg *config.Sandbox, p *plan) *libvirtxml.DomainDeviceList {
	filesystems, disks := qemuStorage(cfg, p)
	channels := append(appChannels(cfg, p.stateDir, p.remote), dataPorts(cfg, p.stateDir)...)
	if p.template {
		channels = append(channels, runChannel(p.stateDir))
	}
	return &libvirtxml.DomainDeviceList{
		Interfaces:  describeInterfaces(cfg, p, "virtio"),
		Filesystems: filesystems,
		Disks:       disks,
		Serials:     []libvirtxml.DomainSerial{serialConsole(cfg, p)},
		Channels:    channels,
		MemBalloon:  &libvirtxml.DomainMemBalloon{Model: "none"},
		RNGs: []libvirtxml.DomainRNG{{
			Model:   "virtio",
			Backend: &libvirtxml.DomainRNGBackend{Random: &libvirtxml.DomainRNGBackendRandom{Device: "/dev/urandom"}},
		}},
		// Nothing to plug in: each device costs boot time.
		Controllers: []libvirtxml.DomainController{{Type: "usb", Model: "none"}},
	}
}

// qemuStorage are the machine's shares and disks: the root (shared, or
// the root image's disk), the config share, the user's mounts and disks,
// and a service's log share.
func qemuStorage(cfg *config.Sandbox, p *plan) ([]libvirtxml.DomainFilesystem, []libvirtxml.DomainDisk) {
	root := cfg.Root
	if root == "" {
		root = "/"
	}
	var filesystems []libvirtxml.DomainFilesystem
	if cfg.RootImage == "" {
		filesystems = append(filesystems, p.shares.share(root, guest.RootTag, true, true))
	}
	if !p.remote {
		// The config share is read once, and stays 9p: a virtiofsd
		// costs boot time.
		filesystems = append(filesystems, ninePShare(p.stateDir, guest.ConfigTag, true))
	}
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
	if cfg.RootImage != "" {
		blk(p.rootImage, "raw", guest.RootTag, true)
	}
	for i, m := range cfg.Mounts {
		switch m.Type {
		case config.HostBind:
			filesystems = append(filesystems, p.shares.share(m.Source, guest.MountTag(i), m.ReadOnly, false))
		case config.HostImage:
			blk(m.Source, m.Format, guest.MountTag(i), m.ReadOnly)
		}
	}
	for _, dk := range cfg.Disks {
		blk(dk.Source, dk.Format, dk.Tag, false)
	}
	if cfg.Service != nil && !p.remote {
		filesystems = append(filesystems, writableShare(p.logDir, guest.LogTag, p.shares.squash))
	}
	return filesystems, disks
}

// appChannels are the machine's app channels: virtio-serial ports on UNIX
// sockets, which OpenChannel needs. Locally the sockets are in the state
// directory, where the launcher connects to them itself; their path is
// ours and short, since the one libvirt picks grows with its own
// directories (deep ones for session and embedded drivers) and the
// domain's name, past the 108 bytes a socket path may have. A remote host
// picks its own, and the launcher goes through libvirt.
func appChannels(cfg *config.Sandbox, stateDir string, remote bool) []libvirtxml.DomainChannel {
	var chans []libvirtxml.DomainChannel
	for i := range guest.AppChannels(cfg.Service != nil) {
		src := &libvirtxml.DomainChardevSourceUNIX{Mode: "bind"}
		if !remote {
			src.Path = appSocket(stateDir, i)
		}
		chans = append(chans, libvirtxml.DomainChannel{
			Source: &libvirtxml.DomainChardevSource{UNIX: src},
			Target: &libvirtxml.DomainChannelTarget{VirtIO: &libvirtxml.DomainChannelTargetVirtIO{Name: guest.AppChannelName(i)}},
		})
	}
	return chans
}

// dataPorts are the machine's data ports, on UNIX sockets in the state
// directory, when it has them (hasDataPorts).
func dataPorts(cfg *config.Sandbox, stateDir string) []libvirtxml.DomainChannel {
	if !hasDataPorts(cfg) {
		return nil
	}
	var chans []libvirtxml.DomainChannel
	for i, name := range guest.DataPorts {
		chans = append(chans, libvirtxml.DomainChannel{
			Source: &libvirtxml.DomainChardevSource{UNIX: &libvirtxml.DomainChardevSourceUNIX{Mode: "bind", Path: dataSocket(stateDir, i)}},
			Target: &libvirtxml.DomainChannelTarget{VirtIO: &libvirtxml.DomainChannelTargetVirtIO{Name: name}},
		})
	}
	return chans
}

// dataSocket is where QEMU listens for data port i (stdin, stdout,
// stderr).
func dataSocket(stateDir string, i int) string {
	return filepath.Join(stateDir, []string{"stdin.sock", "stdout.sock", "stderr.sock"}[i])
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
	return dom.OpenChannel(guest.AppChannelName(i), st, 0)
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
	return hostdirs.Cache()
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

// embedRoot is the root directory of an embedded driver's URI.
func embedRoot(uri string) (string, error) {
	u, err := url.Parse(uri)
	if err != nil || u.Query().Get("root") == "" {
		return "", fmt.Errorf("%w: -c %q: the embedded driver needs ?root=DIR", config.ErrInvalid, uri)
	}
	return u.Query().Get("root"), nil
}

// prepareEmbedRoot gives a new root of the embedded QEMU driver a qemu.conf
// that logs QEMU's output to files itself: its default hands logs to
// virtlogd, which the embedded driver is meant to do without.
func prepareEmbedRoot(uri string) error {
	root, err := embedRoot(uri)
	if err != nil {
		return err
	}
	etc := filepath.Join(root, "etc")
	conf := filepath.Join(etc, "qemu.conf")
	if fileExists(conf) {
		return nil
	}
	if err := os.MkdirAll(etc, 0o755); err != nil {
		return fmt.Errorf("embedded driver root: %w", err)
	}
	return os.WriteFile(conf, []byte("# Written by virt-sandbox: no virtlogd needed.\nstdio_handler = \"file\"\n"), 0o644)
}

// embedLog is the file, under the embedded driver's root, that gets
// libvirt's own log lines.
const embedLog = "log/libvirt.log"

// divertEmbedLogs sends libvirt's log lines to root/log/libvirt.log, and
// with -d to stderr as well. The embedded driver runs in this process and
// in processes it forks, and logs to file descriptor 2 by default: the
// program's stderr. A forked child resets its logging to descriptor 2 (the
// DAC driver relabels in one, where "Invalid XATTR timestamp" is logged),
// so until the returned function restores it, descriptor 2 is the log
// file (with -d, a pipe copied to the file and to stderr), and the
// program's stderr, when it is this process's, a copy of the original.
// Without -d, this process's libvirt logs to the file named in
// LIBVIRT_LOG_OUTPUTS besides, which it reads when the process first uses
// it (so this runs before connecting), so that what its event loop logs
// after Run goes there too; outputs the user set are left to them.
func divertEmbedLogs(uri string, debug bool, stdio *IO) (restore func(), err error) {
	root, err := embedRoot(uri)
	if err != nil {
		return nil, err
	}
	name, err := filepath.Abs(filepath.Join(root, embedLog))
	if err == nil {
		err = os.MkdirAll(filepath.Dir(name), 0o755)
	}
	if err != nil {
		return nil, fmt.Errorf("embedded driver root: %w", err)
	}
	// libvirt splits outputs at white space and their fields at colons: a
	// name with them is reached through descriptor 2 only.
	if !debug && os.Getenv("LIBVIRT_LOG_OUTPUTS") == "" && !strings.ContainsAny(name, ": \t\n") {
		os.Setenv("LIBVIRT_LOG_OUTPUTS", "1:file:"+name)
	}
	log, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_APPEND|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("embedded driver root: %w", err)
	}
	saved, err := unix.FcntlInt(2, unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		log.Close()
		return nil, fmt.Errorf("keeping stderr: %w", err)
	}
	stderr := os.NewFile(uintptr(saved), "/dev/stderr")
	sink, copied := log, make(chan struct{})
	if debug {
		r, w, err := os.Pipe()
		if err != nil {
			log.Close()
			stderr.Close()
			return nil, fmt.Errorf("diverting libvirt's log: %w", err)
		}
		go func() {
			io.Copy(io.MultiWriter(log, stderr), r)
			r.Close()
			close(copied)
		}()
		sink = w
	} else {
		close(copied)
	}
	err = unix.Dup3(int(sink.Fd()), 2, 0)
	sink.Close()
	if err != nil {
		stderr.Close()
		return nil, fmt.Errorf("diverting libvirt's log: %w", err)
	}
	if stdio.Stderr == os.Stderr {
		stdio.Stderr = stderr
	}
	return func() {
		unix.Dup3(saved, 2, 0)
		// A child that still holds the pipe must not hold up the exit.
		select {
		case <-copied:
		case <-time.After(time.Second):
		}
		log.Close()
		stderr.Close()
	}, nil
}
