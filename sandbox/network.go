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

// interfaces builds the domain's interfaces, one per -N. Each gets the MAC
// address the init will know it by (the one asked for, or a new one kept in
// the config), since interface names differ between drivers and kernels.
func (r *run) interfaces(model string) ([]libvirtxml.DomainInterface, error) {
	var ifaces []libvirtxml.DomainInterface
	for i := range r.cfg.Networks {
		n := &r.cfg.Networks[i]
		source, err := r.interfaceSource(n)
		if err != nil {
			return nil, err
		}
		if n.MAC == "" {
			n.MAC = newMAC()
		}
		iface := libvirtxml.DomainInterface{
			MAC:    &libvirtxml.DomainInterfaceMAC{Address: n.MAC},
			Source: source,
		}
		if model != "" {
			iface.Model = &libvirtxml.DomainInterfaceModel{Type: model}
		} else {
			// libvirt's LXC driver binds a filter before it names the
			// host side of the veth ("filter binding has no port dev
			// name"): name it here, uniquely, within 15 bytes.
			iface.Target = &libvirtxml.DomainInterfaceTarget{Dev: fmt.Sprintf("vsb%s%d", r.cfg.UUID[:8], i)}
		}
		if n.Filter != "" {
			ref := &libvirtxml.DomainInterfaceFilterRef{Filter: n.Filter}
			keys := make([]string, 0, len(n.FilterParams))
			for k := range n.FilterParams {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				ref.Parameters = append(ref.Parameters, libvirtxml.DomainInterfaceFilterParam{Name: k, Value: n.FilterParams[k]})
			}
			iface.FilterRef = ref
		}
		ifaces = append(ifaces, iface)
	}
	return ifaces, nil
}

// interfaceSource is what an interface attaches to: QEMU's user-mode
// network, or a libvirt network of the connection, which must exist.
func (r *run) interfaceSource(n *config.Network) (*libvirtxml.DomainInterfaceSource, error) {
	if n.User {
		return &libvirtxml.DomainInterfaceSource{User: &libvirtxml.DomainInterfaceSourceUser{}}, nil
	}
	option := "-N source=" + n.Source
	if n.Source == "" {
		n.Source, option = defaultNetwork, "-N"
	}
	net, err := r.conn.LookupNetworkByName(n.Source)
	var le libvirt.Error
	if errors.As(err, &le) && le.Code == libvirt.ERR_NO_NETWORK && r.cfg.URI == "qemu:///session" {
		return nil, fmt.Errorf("%s: qemu:///session has no libvirt network %q, and a session cannot make one (it needs root for a bridge): -N user gives QEMU's user-mode network", option, n.Source)
	}
	if err != nil {
		return nil, libvirtError(option, err)
	}
	net.Free()
	return &libvirtxml.DomainInterfaceSource{Network: &libvirtxml.DomainInterfaceSourceNetwork{Network: n.Source}}, nil
}

// newMAC is a random address in the range QEMU and libvirt use for guests.
func newMAC() string {
	var b [3]byte
	rand.Read(b[:])
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", b[0], b[1], b[2])
}
