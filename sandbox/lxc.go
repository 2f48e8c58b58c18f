package sandbox

import (
	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/virt-sandbox/virt-sandbox/config"
)

// lxcDriver runs sandboxes as libvirt LXC containers sharing the host kernel.
type lxcDriver struct{}

// The consoles of an LXC sandbox: the first is the container's /dev/console,
// where the init logs; the second is the app channel, /dev/tty2 inside.
const (
	lxcLogConsole = "console0"
	lxcAppConsole = "console1"
)

func (lxcDriver) domain(cfg *config.Sandbox, r *run) (*libvirtxml.Domain, error) {
	root := cfg.Root
	if root == "" {
		root = "/"
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
		bindFS(r.stateDir, config.GuestDir, true),
		bindFS(r.initPath, config.GuestInit, true),
	}
	pty := func() libvirtxml.DomainConsole {
		return libvirtxml.DomainConsole{Source: &libvirtxml.DomainChardevSource{Pty: &libvirtxml.DomainChardevSourcePty{}}}
	}
	d := baseDomain(cfg, "lxc", lxcMemoryMiB(cfg))
	d.OS = &libvirtxml.DomainOS{
		Type:     &libvirtxml.DomainOSType{Type: "exe"},
		Init:     config.GuestInit,
		InitArgs: []string{"lxc"},
	}
	// privnet: a network namespace of its own, so no network unless asked.
	d.Features = &libvirtxml.DomainFeatureList{PrivNet: &libvirtxml.DomainFeature{}}
	d.Devices = &libvirtxml.DomainDeviceList{
		Filesystems: fs,
		Consoles:    []libvirtxml.DomainConsole{pty(), pty()},
	}
	return d, nil
}

func (lxcDriver) openChannel(dom *libvirt.Domain, st *libvirt.Stream) error {
	// The LXC driver refuses the FORCE flag.
	return dom.OpenConsole(lxcAppConsole, st, 0)
}

func (lxcDriver) openLog(dom *libvirt.Domain, st *libvirt.Stream) error {
	return dom.OpenConsole(lxcLogConsole, st, 0)
}

// lxcMemoryMiB is the container's memory limit: what was asked, else the
// host's memory, since a container that shares the host kernel has no need
// of a smaller default.
func lxcMemoryMiB(cfg *config.Sandbox) uint64 {
	if cfg.Kernel.MemoryMiB > 0 {
		return cfg.Kernel.MemoryMiB
	}
	return hostMemoryMiB()
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
