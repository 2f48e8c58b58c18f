package sandbox

import (
	"fmt"
	"golang.org/x/sys/unix"
	"libvirt.org/go/libvirtxml"
	"os"
	"runtime"

	"github.com/virt-sandbox/virt-sandbox/config"
	"github.com/virt-sandbox/virt-sandbox/config/guest"
)

// plan is what a sandbox's domain needs beyond its config: every path,
// device and verdict its driver's prepare found, made, uploaded or probed.
// describe builds the domain from the config and the plan alone, touching
// nothing, so the same two always give the same XML.
type plan struct {
	// remote: libvirt runs on another machine, whose domains name its own
	// files only: no config share, log share or channel sockets of ours.
	remote bool
	// stateDir is the run's state directory (a service's own directory):
	// the config share, the console log and the channel sockets.
	stateDir string
	// logDir is a service's log share.
	logDir    string
	memoryMiB uint64
	// rootImage is the path the domain names for the config's root
	// image: the file itself locally, its volume on a remote host.
	rootImage string
	// interfaces are the config's networks as attached, in their order.
	interfaces []plannedInterface

	// QEMU's: the boot files the domain names (the caller's cached copies
	// locally, volumes on a remote host), the domain type (kvm or qemu)
	// and how host directories are shared.
	kernel, initrd string
	virtType       string
	shares         shares
	// runAs, when set, is the caller QEMU runs as, told to libvirt in a
	// DAC seclabel: a local system or embedded driver's QEMU.
	runAs *owner
	// template makes the machine a template's, whose init waits for the
	// run on the run channel (template.go).
	template bool

	// LXC's: the container's root as libvirt is given it (the host's / or
	// a skeleton of ours), the init's path (the launcher's, or its volume
	// on a remote host) and the loop device of each disk, in order.
	root        string
	init        string
	loopDevices []string
}

// owner is a uid and gid of the host.
type owner struct{ uid, gid int }

// plannedInterface is an interface as prepare resolved it.
type plannedInterface struct {
	// network is the libvirt network it joins; "" for QEMU's user-mode
	// network.
	network string
	mac     string
}

// basePlan is the part of the plan every driver's prepare starts from.
func (r *run) basePlan() *plan {
	return &plan{remote: r.remote(), stateDir: r.stateDir, logDir: r.logDir}
}

// baseDomain is what every sandbox domain has, whichever the driver.
func baseDomain(cfg *config.Sandbox, typ string, memMiB uint64) *libvirtxml.Domain {
	d := &libvirtxml.Domain{
		Type:       typ,
		Name:       cfg.Name,
		UUID:       cfg.UUID,
		Memory:     &libvirtxml.DomainMemory{Value: uint(memMiB), Unit: "MiB"},
		OnPoweroff: "destroy",
		OnReboot:   "destroy",
		OnCrash:    "destroy",
		Metadata:   nil,
	}
	if cfg.Kernel.VCPUs > 0 {
		d.VCPU = &libvirtxml.DomainVCPU{Value: cfg.Kernel.VCPUs}
	}
	switch cfg.Security.Label {
	case "static":
		d.SecLabel = []libvirtxml.DomainSecLabel{{Type: "static", Label: cfg.Security.Value, Relabel: "no"}}
	case "inherit":
		d.SecLabel = []libvirtxml.DomainSecLabel{{Type: "none"}}
	}
	return d
}

// checkHost checks the config against the host it runs on, before anything
// starts: what no sandbox of this host could be given is refused in the
// words of its option. A remote host's limits are the remote libvirt's to
// check.
func checkHost(cfg *config.Sandbox) error {
	k := cfg.Kernel
	if cfg.Driver == config.QEMU && k.VCPUs > maxQEMUVCPUs {
		return fmt.Errorf("%w: --vcpus %d: a QEMU sandbox takes at most %d", config.ErrInvalid, k.VCPUs, maxQEMUVCPUs)
	}
	if cfg.Driver == config.LXC && k.MemoryMiB != 0 && k.MemoryMiB < minLXCMemoryMiB {
		return fmt.Errorf("%w: --memory %dM: too small for a container to start (want at least %dM)", config.ErrInvalid, k.MemoryMiB, minLXCMemoryMiB)
	}
	if cfg.Driver == config.QEMU && cfg.Kernel.ShareFS == guest.VirtiofsShares {
		_, daemons := virtiofsDaemons()
		if _, err := shareFS(cfg, os.Getuid(), daemons); err != nil {
			return err
		}
	}
	if !isLocal(cfg.URI) {
		return nil
	}
	if cpus := uint(runtime.NumCPU()); cfg.Driver == config.LXC && k.VCPUs > cpus {
		return fmt.Errorf("%w: --vcpus %d: this host has %d CPUs", config.ErrInvalid, k.VCPUs, cpus)
	}
	mem := hostMemoryMiB()
	if cfg.Driver == config.QEMU && k.MemoryMiB > mem {
		return fmt.Errorf("%w: --memory %dM: more than this host's %dM", config.ErrInvalid, k.MemoryMiB, mem)
	}
	for _, m := range cfg.Mounts {
		if m.Type == config.RAM && m.SizeKiB>>10 > mem {
			return fmt.Errorf("%w: -m ram:%s: %dM is more than this host's %dM of memory", config.ErrInvalid, m.Target, m.SizeKiB>>10, mem)
		}
	}
	return nil
}

// maxQEMUVCPUs is what QEMU's pc machine takes.
const maxQEMUVCPUs = 255

// minLXCMemoryMiB is the least memory limit a container starts its init
// and a small program under (4 MiB was enough here; 8 leaves room).
const minLXCMemoryMiB = 8

func hostMemoryMiB() uint64 {
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) != nil {
		return 1024
	}
	return uint64(si.Totalram) * uint64(si.Unit) >> 20
}
