package sandbox

import (
	"golang.org/x/sys/unix"
	"libvirt.org/go/libvirtxml"

	"github.com/virt-sandbox/virt-sandbox/config"
)

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

func hostMemoryMiB() uint64 {
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) != nil {
		return 1024
	}
	return uint64(si.Totalram) * uint64(si.Unit) >> 20
}
