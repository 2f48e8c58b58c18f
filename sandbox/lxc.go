package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/virt-sandbox/virt-sandbox/config"
	"github.com/virt-sandbox/virt-sandbox/config/guest"
)

// lxcDriver runs sandboxes as libvirt LXC containers sharing the host kernel.
type lxcDriver struct{}

// The consoles of an LXC sandbox: the first is the container's /dev/console,
// where the init logs; the next are the app channels, /dev/tty2 and on
// inside.
const lxcLogConsole = "console0"

func lxcAppConsole(i int) string { return fmt.Sprintf("console%d", i+1) }

func (lxcDriver) domain(cfg *config.Sandbox, r *run) (*libvirtxml.Domain, error) {
	fs, err := r.lxcBaseFilesystems()
	if err != nil {
		return nil, err
	}
	// The sources of the user's mounts go to their stages; the init binds
	// them on their targets.
	for i, m := range cfg.Mounts {
		switch m.Type {
		case config.HostBind:
			fs = append(fs, bindFS(m.Source, guest.MountStage(i), m.ReadOnly))
		case config.HostImage:
			if m.Format == "qcow2" {
				if err := needNBD(); err != nil {
					return nil, err
				}
			}
			fs = append(fs, imageFS(m.Source, m.Format, guest.MountStage(i), m.ReadOnly))
		}
	}
	var hostdevs []libvirtxml.DomainHostdev
	if cfg.Service != nil && len(cfg.Disks) > 0 {
		return nil, errors.New("--disk: an LXC service has no launcher to hold its loop devices between start and stop: use a QEMU service")
	}

	for i := range cfg.Disks {
		d := &cfg.Disks[i]
		if d.Format != "raw" {
			return nil, fmt.Errorf("--disk %s: LXC sandboxes take raw disk images only (on a loop device); a %s image needs QEMU", d.Tag, d.Format)
		}
		dev, f, err := attachLoop(d.Source)
		if err != nil {
			return nil, fmt.Errorf("--disk %s: %w", d.Tag, err)
		}
		r.onCleanup(func() { f.Close() })
		r.resolved.DiskDevices[i] = dev
		hostdevs = append(hostdevs, libvirtxml.DomainHostdev{
			CapsStorage: &libvirtxml.DomainHostdevCapsStorage{Source: &libvirtxml.DomainHostdevCapsStorageSource{Block: dev}},
		})
	}
	pty := func() libvirtxml.DomainConsole {
		return libvirtxml.DomainConsole{Source: &libvirtxml.DomainChardevSource{Pty: &libvirtxml.DomainChardevSourcePty{}}}
	}
	ifaces, err := r.interfaces("")
	if err != nil {
		return nil, err
	}
	consoles := []libvirtxml.DomainConsole{pty()}
	for range guest.AppChannels(cfg.Service != nil) {
		consoles = append(consoles, pty())
	}
	d := baseDomain(cfg, "lxc", r.lxcMemoryMiB())
	d.OS = &libvirtxml.DomainOS{
		Type:     &libvirtxml.DomainOSType{Type: "exe"},
		Init:     guest.Init,
		InitArgs: []string{guest.LXCArg},
	}
	if r.remote() {
		d.OS.InitEnv = []libvirtxml.DomainOSInitEnv{{Name: guest.FilesEnv, Value: guest.FilesOnChannel}}
	}
	// privnet: a network namespace of its own even without interfaces, so
	// no network unless asked.
	d.Features = &libvirtxml.DomainFeatureList{PrivNet: &libvirtxml.DomainFeature{}}
	d.Devices = &libvirtxml.DomainDeviceList{
		Filesystems: fs,
		Hostdevs:    hostdevs,
		Interfaces:  ifaces,
		Consoles:    consoles,
	}
	return d, nil
}

func (lxcDriver) openChannel(dom *libvirt.Domain, i int, st *libvirt.Stream) error {
	// The LXC driver refuses the FORCE flag.
	return dom.OpenConsole(lxcAppConsole(i), st, 0)
}

func (lxcDriver) openLog(dom *libvirt.Domain, st *libvirt.Stream) error {
	return dom.OpenConsole(lxcLogConsole, st, 0)
}

// lxcBaseFilesystems are the container's root, its private /run, the
// config share and the init, and a custom root on its stage. On a remote
// host the root is the host's own / (no skeleton of ours can be made
// there), the init is a volume and there is no config share: the run's
// files come on the channel.
func (r *run) lxcBaseFilesystems() ([]libvirtxml.DomainFilesystem, error) {
	cfg := r.cfg
	root, init := "/", r.initPath
	if (cfg.Root != "" || cfg.RootImage != "") && !r.remote() {
		// libvirt makes a directory in the root it is given: give it a
		// skeleton of ours, and the custom root on a stage the init
		// switches to.
		skel, err := skeletonRoot(r.stateDir)
		if err != nil {
			return nil, stateError(err)
		}
		root = skel
	}
	if r.remote() {
		var err error
		if init, err = r.uploadFile("init", r.initPath, 0o755); err != nil {
			return nil, err
		}
	}
	fs := []libvirtxml.DomainFilesystem{
		bindFS(root, "/", true),
		// A private /run: the host's holds sockets a sandbox has no business
		// reaching, and it gives the config share a place to be mounted on
		// a read-only root.
		{
			AccessMode: "passthrough",
			Source:     &libvirtxml.DomainFilesystemSource{RAM: &libvirtxml.DomainFilesystemSourceRAM{Usage: 64, Units: "MiB"}},
			Target:     &libvirtxml.DomainFilesystemTarget{Dir: "/run"},
		},
	}
	if !r.remote() {
		fs = append(fs, bindFS(r.stateDir, guest.Dir, true))
	}
	fs = append(fs, bindFS(init, guest.Init, true))
	if cfg.Root != "" {
		fs = append(fs, bindFS(cfg.Root, guest.Root, true))
	}
	if cfg.RootImage != "" {
		img, err := r.rootImage()
		if err != nil {
			return nil, err
		}
		fs = append(fs, imageFS(img, "raw", guest.Root, true))
	}
	if cfg.Service != nil && !r.remote() {
		fs = append(fs, bindFS(r.logDir, guest.Log, false))
	}
	return fs, nil
}

// lxcMemoryMiB is the container's memory limit: what was asked, else the
// host's memory, since a container that shares the host kernel has no need
// of a smaller default.
func (r *run) lxcMemoryMiB() uint64 {
	if r.cfg.Kernel.MemoryMiB > 0 {
		return r.cfg.Kernel.MemoryMiB
	}
	if r.remote() {
		if info, err := r.conn.GetNodeInfo(); err == nil {
			return info.Memory >> 10
		}
	}
	return hostMemoryMiB()
}

// imageFS is a filesystem image mounted at dst: libvirt maps a raw one on a
// loop device, a qcow2 one on nbd.
func imageFS(src, format, dst string, readonly bool) libvirtxml.DomainFilesystem {
	driver := &libvirtxml.DomainFilesystemDriver{Type: "loop", Format: "raw"}
	if format == "qcow2" {
		driver = &libvirtxml.DomainFilesystemDriver{Type: "nbd", Format: "qcow2"}
	}
	f := libvirtxml.DomainFilesystem{
		AccessMode: "passthrough",
		Driver:     driver,
		Source:     &libvirtxml.DomainFilesystemSource{File: &libvirtxml.DomainFilesystemSourceFile{File: src}},
		Target:     &libvirtxml.DomainFilesystemTarget{Dir: dst},
	}
	if readonly {
		f.ReadOnly = &libvirtxml.DomainFilesystemReadOnly{}
	}
	return f
}

func bindFS(src, dst string, readonly bool) libvirtxml.DomainFilesystem {
	f := libvirtxml.DomainFilesystem{
		AccessMode: "passthrough",
		Source:     &libvirtxml.DomainFilesystemSource{Mount: &libvirtxml.DomainFilesystemSourceMount{Dir: src}},
		Target:     &libvirtxml.DomainFilesystemTarget{Dir: dst},
	}
	if readonly {
		f.ReadOnly = &libvirtxml.DomainFilesystemReadOnly{}
	}
	return f
}

// needNBD tells whether qcow2 images can be mapped on this host.
func needNBD() error {
	if _, err := os.Stat("/dev/nbd0"); err != nil {
		return errors.New("qcow2 images reach LXC sandboxes through nbd, which this host's kernel lacks: use a raw image or QEMU")
	}
	return nil
}

// skeletonRoot makes, in the state directory, an empty root with the mount
// points libvirt and the init use.
func skeletonRoot(stateDir string) (string, error) {
	skel := filepath.Join(stateDir, "skeleton")
	for _, d := range guest.RootMountPoints {
		if err := os.MkdirAll(filepath.Join(skel, d), 0o755); err != nil {
			return "", err
		}
	}
	return skel, nil
}

// lxcStateDir is where libvirt's LXC driver keeps each container's state.
const lxcStateDir = "/run/libvirt/lxc"

// removeLXCLeftovers removes what libvirt 9.0's LXC driver leaves behind
// for every container it ran: empty directories (NAME.dev, NAME.devpts,
// NAME.fuse), the controller's socket (NAME.sock) and the container's log.
// One-shot sandboxes have unique names, so these would pile up (1,000
// logs and 170 sockets after a day of tests here). Only root may, and
// only root's libvirtd makes them; the domain is gone when this runs.
func removeLXCLeftovers(name string) {
	for _, suffix := range []string{".dev", ".devpts", ".fuse"} {
		os.Remove(filepath.Join(lxcStateDir, name+suffix))
	}
	os.Remove(filepath.Join(lxcStateDir, name+".sock"))
	os.Remove(filepath.Join(lxcLogDir, name+".log"))
}

// lxcLogDir holds libvirt's log of each container.
const lxcLogDir = "/var/log/libvirt/lxc"

// lxcControllerGone tells a container libvirt still reports running while
// its controller has exited: libvirt 9.0 now and then misses that exit and
// sends no event. Only root can see the controller's pid file.
func lxcControllerGone(name string) bool {
	b, err := os.ReadFile(filepath.Join(lxcStateDir, name+".pid"))
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return false
	}
	return syscall.Kill(pid, 0) == syscall.ESRCH
}
