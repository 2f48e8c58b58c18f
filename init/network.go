package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/virt-sandbox/virt-sandbox/config"
)

// netDir holds the sandbox's own resolv.conf and hostname, in its own
// /run (b.ownRun), bound over the root's so the host's files are never touched.
const netDir = "virt-sandbox-net"

// dhcpTimeout bounds the wait for a DHCP lease.
const dhcpTimeout = 30 * time.Second

// setupNetwork brings up loopback, then every interface the config names,
// found by MAC address, with a static address or a DHCP lease, and writes
// the sandbox's resolv.conf and hostname.
func setupNetwork(b *boot) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	if err := b.setHostname(b.cfg.Name); err != nil {
		return err
	}
	var res resolver
	defaultRoute := false
	for _, n := range b.cfg.Networks {
		link, err := linkByMAC(n.MAC)
		if err != nil {
			return err
		}
		name := link.Attrs().Name
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if n.DHCP {
			if err := configureDHCP(link, &res, &defaultRoute); err != nil {
				return fmt.Errorf("DHCP on %s: %w", name, err)
			}
			b.logf("network: %s (%s) configured by DHCP", name, n.MAC)
			continue
		}
		if err := configureStatic(link, n); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		b.logf("network: %s (%s) configured statically", name, n.MAC)
	}
	return res.write(b)
}

// linkByMAC waits a bounded time for the interface with mac to appear:
// QEMU's are probed while the init runs.
func linkByMAC(mac string) (netlink.Link, error) {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return nil, err
	}
	return waitFor(time.Now().Add(deviceWait), 5*time.Millisecond, fmt.Errorf("no interface with MAC address %s", mac), func() (netlink.Link, bool, error) {
		links, err := netlink.LinkList()
		if err != nil {
			return nil, false, err
		}
		for _, l := range links {
			if l.Attrs().HardwareAddr.String() == hw.String() {
				return l, true, nil
			}
		}
		return nil, false, nil
	})
}

func configureStatic(link netlink.Link, n config.Network) error {
	for _, a := range n.Addresses {
		cidr, bcast, _ := strings.Cut(a, "%")
		addr, err := netlink.ParseAddr(cidr)
		if err != nil {
			return err
		}
		if bcast != "" {
			addr.Broadcast = net.ParseIP(bcast)
		}
		if err := netlink.AddrAdd(link, addr); err != nil {
			return fmt.Errorf("address %s: %w", a, err)
		}
	}
	for _, r := range n.Routes {
		_, dst, err := net.ParseCIDR(r.Dest)
		if err != nil {
			return err
		}
		route := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst, Gw: net.ParseIP(r.Gateway)}
		if err := netlink.RouteAdd(route); err != nil {
			return fmt.Errorf("route %s via %s: %w", r.Dest, r.Gateway, err)
		}
	}
	return nil
}

// configureDHCP asks for a lease and applies it; the first interface with
// a router gets the default route.
func configureDHCP(link netlink.Link, res *resolver, defaultRoute *bool) error {
	// Short, many tries: the first discover often goes out before the
	// host side of the link forwards, and the default wait is 5 s.
	client, err := nclient4.New(link.Attrs().Name, nclient4.WithTimeout(200*time.Millisecond), nclient4.WithRetry(int(dhcpTimeout/(200*time.Millisecond))))
	if err != nil {
		return err
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), dhcpTimeout)
	defer cancel()
	lease, err := client.Request(ctx)
	if err != nil {
		return err
	}
	ack := lease.ACK
	mask := ack.SubnetMask()
	if mask == nil {
		mask = ack.YourIPAddr.DefaultMask()
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: ack.YourIPAddr, Mask: mask}, Broadcast: ack.BroadcastAddress()}
	if err := netlink.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("address %s: %w", addr.IPNet, err)
	}
	if routers := ack.Router(); len(routers) > 0 && !*defaultRoute {
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: routers[0]}); err != nil {
			return fmt.Errorf("default route via %s: %w", routers[0], err)
		}
		*defaultRoute = true
	}
	for _, ip := range ack.DNS() {
		res.servers = append(res.servers, ip.String())
	}
	if d := ack.DomainName(); d != "" {
		res.search = append(res.search, d)
	}
	if labels := ack.DomainSearch(); labels != nil {
		res.search = append(res.search, labels.Labels...)
	}
	return nil
}

// resolver is what DHCP taught about name resolution.
type resolver struct {
	servers, search []string
}

func (r resolver) write(b *boot) error {
	if len(r.servers) == 0 {
		return nil
	}
	var conf strings.Builder
	if len(r.search) > 0 {
		fmt.Fprintf(&conf, "search %s\n", strings.Join(r.search, " "))
	}
	for _, s := range r.servers {
		fmt.Fprintf(&conf, "nameserver %s\n", s)
	}
	return b.overrideFile("/etc/resolv.conf", conf.String())
}

func (b *boot) setHostname(name string) error {
	if err := unix.Sethostname([]byte(name)); err != nil {
		return fmt.Errorf("hostname: %w", err)
	}
	return b.overrideFile("/etc/hostname", name+"\n")
}

// overrideFile shows content at path in the sandbox only. Where path's
// symbolic link points into the sandbox's own /run, the file is written
// there; anywhere else (the root, or a user's mount, /run itself included)
// it is written in the own /run and bound over path, so no file of the
// host is written. A root without the file keeps going without it.
func (b *boot) overrideFile(path, content string) error {
	target := path
	if dst, err := filepath.EvalSymlinks(path); err == nil {
		target = dst
	} else if link, lerr := os.Readlink(path); lerr == nil && strings.HasPrefix(link, "/run/") {
		target = link
	} else if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if rel, ok := strings.CutPrefix(target, "/run/"); ok && !config.UnderMount(b.cfg.Mounts, target) {
		return writeIn(b.ownRun, rel, content)
	}
	if _, err := os.Stat(target); err != nil {
		// A link into a user's mount without the file: it could only
		// be shown by writing there.
		return nil
	}
	own := filepath.Join(netDir, filepath.Base(path))
	if err := writeIn(b.ownRun, own, content); err != nil {
		return err
	}
	if err := bindFrom(b.ownRun, own, target); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
