// Command rawlxc is the LXC baseline of tests/bench.sh: the least a program
// must do to run /bin/true in a libvirt LXC container through the same Go
// API virt-sandbox uses. It creates a transient, autodestroyed domain whose
// root is the host's / read-only, with a network namespace of its own and
// one pty console, and waits, through lifecycle events, until it is gone.
package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"time"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "rawlxc:", err)
		os.Exit(1)
	}
}

func run() error {
	if err := libvirt.EventRegisterDefaultImpl(); err != nil {
		return err
	}
	go func() {
		for libvirt.EventRunDefaultImpl() == nil {
		}
	}()
	conn, err := libvirt.NewConnect("lxc:///")
	if err != nil {
		return err
	}
	defer conn.Close()

	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return err
	}
	name := "bench-rawlxc-" + hex.EncodeToString(b[:])

	// Registered before the domain exists: /bin/true may be gone before
	// DomainCreateXML returns.
	gone := make(chan struct{})
	cb, err := conn.DomainEventLifecycleRegister(nil, func(_ *libvirt.Connect, d *libvirt.Domain, ev *libvirt.DomainEventLifecycle) {
		if n, err := d.GetName(); err != nil || n != name {
			return
		}
		if ev.Event == libvirt.DOMAIN_EVENT_STOPPED || ev.Event == libvirt.DOMAIN_EVENT_UNDEFINED {
			select {
			case <-gone:
			default:
				close(gone)
			}
		}
	})
	if err != nil {
		return err
	}
	defer conn.DomainEventDeregister(cb)

	pty := &libvirtxml.DomainChardevSource{Pty: &libvirtxml.DomainChardevSourcePty{}}
	spec := &libvirtxml.Domain{
		Type:   "lxc",
		Name:   name,
		Memory: &libvirtxml.DomainMemory{Value: 1024, Unit: "MiB"},
		OS: &libvirtxml.DomainOS{
			Type: &libvirtxml.DomainOSType{Type: "exe"},
			Init: "/bin/true",
		},
		Features: &libvirtxml.DomainFeatureList{PrivNet: &libvirtxml.DomainFeature{}},
		Devices: &libvirtxml.DomainDeviceList{
			Filesystems: []libvirtxml.DomainFilesystem{{
				AccessMode: "passthrough",
				Source:     &libvirtxml.DomainFilesystemSource{Mount: &libvirtxml.DomainFilesystemSourceMount{Dir: "/"}},
				Target:     &libvirtxml.DomainFilesystemTarget{Dir: "/"},
				ReadOnly:   &libvirtxml.DomainFilesystemReadOnly{},
			}},
			Consoles: []libvirtxml.DomainConsole{{Source: pty}},
		},
	}
	xml, err := spec.Marshal()
	if err != nil {
		return err
	}
	dom, err := conn.DomainCreateXML(xml, libvirt.DOMAIN_START_AUTODESTROY)
	if err != nil {
		return err
	}
	defer dom.Free()

	select {
	case <-gone:
		return nil
	case <-time.After(10 * time.Second):
		// Seen about once in a hundred runs with libvirt 9.0: the
		// container and its libvirt_lxc controller are gone, yet libvirtd
		// still has the domain running and sends no event. Autodestroy
		// cleans up when the connection closes.
		state, _, _ := dom.GetState()
		return fmt.Errorf("domain %s not gone after 10s (libvirt says state %d)", name, state)
	}
}
