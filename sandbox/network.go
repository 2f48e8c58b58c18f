package sandbox

import (
	"crypto/rand"
	"errors"
	"fmt"
	"sort"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/virt-sandbox/virt-sandbox/config"
)

// defaultNetwork is the libvirt network an interface joins without source=.
const defaultNetwork = "default"

// planInterfaces resolves the interfaces, one per -N: the network each
// joins, which must exist, and the MAC address the init will know it by
// (the one asked for, or a new one), since interface names differ between
// drivers and kernels. Both are recorded in the config the init reads.
func (r *run) planInterfaces() ([]plannedInterface, error) {
	var planned []plannedInterface
	for i := range r.cfg.Networks {
		n := &r.cfg.Networks[i]
		if err := r.resolveNetwork(n); err != nil {
			return nil, err
		}
		if n.MAC == "" {
			n.MAC = newMAC()
		}
		p := plannedInterface{mac: n.MAC}
		if !n.User {
			p.network = n.Source
		}
		planned = append(planned, p)
	}
	return planned, nil
}

// resolveNetwork checks that the libvirt network of n exists, naming the
// default one where n names none. QEMU's user-mode network needs none.
func (r *run) resolveNetwork(n *config.Network) error {
	if n.User {
		return nil
	}
	option := "-N source=" + n.Source
	if n.Source == "" {
		n.Source, option = defaultNetwork, "-N"
	}
	net, err := r.conn.LookupNetworkByName(n.Source)
	var le libvirt.Error
	if errors.As(err, &le) && le.Code == libvirt.ERR_NO_NETWORK && r.cfg.URI == "qemu:///session" {
		return fmt.Errorf("%s: qemu:///session has no libvirt network %q, and a session cannot make one (it needs root for a bridge): -N user gives QEMU's user-mode network", option, n.Source)
	}
	if err != nil {
		return libvirtError(option, err)
	}
	net.Free()
	return nil
}

// describeInterfaces are the domain's interfaces as planned; model is
// QEMU's device model, "" for LXC.
func describeInterfaces(cfg *config.Sandbox, p *plan, model string) []libvirtxml.DomainInterface {
	var ifaces []libvirtxml.DomainInterface
	for i, n := range cfg.Networks {
		planned := p.interfaces[i]
		source := &libvirtxml.DomainInterfaceSource{User: &libvirtxml.DomainInterfaceSourceUser{}}
		if planned.network != "" {
			source = &libvirtxml.DomainInterfaceSource{Network: &libvirtxml.DomainInterfaceSourceNetwork{Network: planned.network}}
		}
		iface := libvirtxml.DomainInterface{
			MAC:    &libvirtxml.DomainInterfaceMAC{Address: planned.mac},
			Source: source,
		}
		if model != "" {
			iface.Model = &libvirtxml.DomainInterfaceModel{Type: model}
		} else {
			// libvirt's LXC driver binds a filter before it names the
			// host side of the veth ("filter binding has no port dev
			// name"): name it here, uniquely, within 15 bytes.
			iface.Target = &libvirtxml.DomainInterfaceTarget{Dev: fmt.Sprintf("vsb%s%d", cfg.UUID[:8], i)}
		}
		iface.FilterRef = filterRef(n)
		ifaces = append(ifaces, iface)
	}
	return ifaces
}

// filterRef is the network filter of n with its parameters, in a stable
// order, or nil.
func filterRef(n config.Network) *libvirtxml.DomainInterfaceFilterRef {
	if n.Filter == "" {
		return nil
	}
	ref := &libvirtxml.DomainInterfaceFilterRef{Filter: n.Filter}
	keys := make([]string, 0, len(n.FilterParams))
	for k := range n.FilterParams {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		ref.Parameters = append(ref.Parameters, libvirtxml.DomainInterfaceFilterParam{Name: k, Value: n.FilterParams[k]})
	}
	return ref
}

// newMAC is a random address in the range QEMU and libvirt use for guests.
func newMAC() string {
	var b [3]byte
	rand.Read(b[:])
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", b[0], b[1], b[2])
}
