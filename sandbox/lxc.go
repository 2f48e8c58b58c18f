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

// prepare makes, uploads and attaches what the container needs: the
// skeleton root, the init on a remote host, the root image, the loop
// devices of the disks; and it checks the host can map the images and
// that the networks exist.
func (lxcDriver) prepare(r *run) (*plan, error) {
	cfg, p := r.cfg, r.basePlan()
	var err error
	if p.root, p.init, err = r.lxcRoot(); err != nil {
		return nil, err
	}
	if cfg.RootImage != "" {
		if p.rootImage, err = r.rootImage(); err != nil {
			return nil, err
		}
	}
	for _, m := range cfg.Mounts {
		if m.Type == config.HostImage && m.Format == "qcow2" {
			if err := needNBD(); err != nil {
				return nil, err
			}
		}
	}
	if p.loopDevices, err = r.attachDisks(); err != nil {
		return nil, err
	}
	if p.interfaces, err = r.planInterfaces(); err != nil {
		return nil, err
	}
	p.memoryMiB = r.lxcMemoryMiB()
	return p, nil
}

// attachDisks attaches each disk to a loop device, held until the run
// ends, and records the device in what the run resolved for the init.
func (r *run) attachDisks() ([]string, error) {
	cfg := r.cfg
	if cfg.Service != nil && len(cfg.Disks) > 0 {
		return nil, errors.New("--disk: an LXC service has no launcher to hold its loop devices between start and stop: use a QEMU service")
	}
	var devices []string
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
		devices = append(devices, dev)
	}
	return devices, nil
}

// describe is the container of cfg as p planned it.
func (lxcDriver) describe(cfg *config.Sandbox, p *plan) *libvirtxml.Domain {
	fs := lxcBaseFilesystems(cfg, p)
	// The sources of the user's mounts go to their stages; the init binds
	// them on their targets.
	for i, m := range cfg.Mounts {
		switch m.Type {
		case config.HostBind:
			fs = append(fs, bindFS(m.Source, guest.MountStage(i), m.ReadOnly))
		case config.HostImage:
			fs = append(fs, imageFS(m.Source, m.Format, guest.MountStage(i), m.ReadOnly))
		}
	}
	var hostdevs []libvirtxml.DomainHostdev
	for _, dev := range p.loopDevices {
		hostdevs = append(hostdevs, libvirtxml.DomainHostdev{
			CapsStorage: &libvirtxml.DomainHostdevCapsStorage{Source: &libvirtxml.DomainHostdevCapsStorageSource{Block: dev}},
		})
	}
	pty := func() libvirtxml.DomainConsole {
		return libvirtxml.DomainConsole{Source: &libvirtxml.DomainChardevSource{Pty: &libvirtxml.DomainChardevSourcePty{}}}
	}
	consoles := []libvirtxml.DomainConsole{pty()}
	for range guest.AppChannels(cfg.Service != nil) {
		consoles = append(consoles, pty())
	}
	d := baseDomain(cfg, "lxc", p.memoryMiB)
	d.OS = &libvirtxml.DomainOS{
		Type:     &libvirtxml.DomainOSType{Type: "exe"},
		Init:     guest.Init,
		InitArgs: []string{guest.LXCArg},
	}
	if p.remote {
		d.OS.InitEnv = []libvirtxml.DomainOSInitEnv{{Name: guest.FilesEnv, Value: guest.FilesOnChannel}}
	}
	// privnet: a network namespace of its own even without interfaces, so
	// no network unless asked.
	d.Features = &libvirtxml.DomainFeatureList{PrivNet: &libvirtxml.DomainFeature{}}
	d.Devices = &libvirtxml.DomainDeviceList{
		Filesystems: fs,
		Hostdevs:    hostdevs,
		Interfaces:  describeInterfaces(cfg, p, ""),
		Consoles:    consoles,
	}
	return d
}

func (lxcDriver) openChannel(dom *libvirt.Domain, i int, st *libvirt.Stream) error {
	// The LXC driver refuses the FORCE flag.
	return dom.OpenConsole(lxcAppConsole(i), st, 0)
}

func (lxcDriver) openLog(dom *libvirt.Domain, st *libvirt.Stream) error {
	return dom.OpenConsole(lxcLogConsole, st, 0)
}

// lxcRoot is the root libvirt is given and the init's path. On a
// remote host the root is the host's own / (no skeleton of ours can be
// made there) and the init is a volume.
func (r *run) lxcRoot() (root, init string, err error) {
	cfg := r.cfg
	root, init = "/", r.initPath
	if (cfg.Root != "" || cfg.RootImage != "") && !r.remote() {
		// libvirt makes a directory in the root it is given: give it a
		// skeleton of ours, and the custom root on a stage the init
		// switches to.
		if root, err = skeletonRoot(r.stateDir); err != nil {
			return "", "", stateError(err)
		}
	}
	if r.remote() {
		if init, err = r.uploadFile("init", r.initPath, 0o755); err != nil {
			return "", "", err
		}
	}
	return root, init, nil
}

// lxcBaseFilesystems are the container's root, its private /run, the
// config share and the init, and a custom root on its stage. A remote
// host has no config share: the run's files come on the channel.
func lxcBaseFilesystems(cfg *config.Sandbox, p *plan) []libvirtxml.DomainFilesystem {
	fs := []libvirtxml.DomainFilesystem{
		bindFS(p.root, "/", true),
		// A private /run: the host's holds sockets a sandbox has no business
		// reaching, and it gives the config share a place to be mounted on
		// a read-only root.
		{
			AccessMode: "passthrough",
			Source:     &libvirtxml.DomainFilesystemSource{RAM: &libvirtxml.DomainFilesystemSourceRAM{Usage: 64, Units: "MiB"}},
			Target:     &libvirtxml.DomainFilesystemTarget{Dir: "/run"},
		},
	}
	if !p.remote {
		fs = append(fs, bindFS(p.stateDir, guest.Dir, true))
	}
	fs = append(fs, bindFS(p.init, guest.Init, true))
	if cfg.Root != "" {
		fs = append(fs, bindFS(cfg.Root, guest.Root, true))
	}
	if cfg.RootImage != "" {
		fs = append(fs, imageFS(p.rootImage, "raw", guest.Root, true))
	}
	if cfg.Service != nil && !p.remote {
		fs = append(fs, bindFS(p.logDir, guest.Log, false))
	}
	return fs
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
