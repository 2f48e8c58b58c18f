package sandbox

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/virt-sandbox/virt-sandbox/config"
)

var eventLoop sync.Once

// connect opens uri with libvirt's default event loop running, which domain
// events and streams need.
func connect(uri string) (*libvirt.Connect, error) {
	var err error
	eventLoop.Do(func() {
		if err = libvirt.EventRegisterDefaultImpl(); err != nil {
			return
		}
		go func() {
			for libvirt.EventRunDefaultImpl() == nil {
			}
		}()
	})
	if err != nil {
		return nil, libvirtError("starting the libvirt event loop", err)
	}
	conn, err := libvirt.NewConnect(uri)
	if err != nil {
		return nil, fmt.Errorf("%w%s", libvirtError("connecting to "+uri, err), connectHint(uri, err))
	}
	return conn, nil
}

// connectHint says what a caller refused by libvirtd's socket can do.
func connectHint(uri string, err error) string {
	var le libvirt.Error
	if !errors.As(err, &le) || !strings.Contains(le.Message, "Permission denied") || strings.Contains(uri, "/session") {
		return ""
	}
	return " (the system libvirtd takes root or group libvirt; qemu:///session runs QEMU as you)"
}

// libvirtError makes one line of a libvirt error (libvirt's own messages
// can span lines) that callers can still errors.As to a libvirt.Error.
func libvirtError(doing string, err error) error {
	var le libvirt.Error
	if errors.As(err, &le) {
		return &oneLineError{doing: doing, err: le}
	}
	return fmt.Errorf("%s: %w", doing, err)
}

type oneLineError struct {
	doing string
	err   libvirt.Error
}

func (e *oneLineError) Error() string {
	return e.doing + ": " + strings.Join(strings.Fields(e.err.Message), " ")
}

func (e *oneLineError) Unwrap() error { return e.err }

// checkSecurityDriver refuses a static label (-s static) on a host whose
// libvirt has no security driver to apply it: libvirt itself only says
// "missing security model".
func checkSecurityDriver(conn *libvirt.Connect, sec config.Security) error {
	if sec.Label != "static" {
		return nil
	}
	doc, err := conn.GetCapabilities()
	if err != nil {
		return libvirtError("reading the host's capabilities", err)
	}
	var caps libvirtxml.Caps
	if err := caps.Unmarshal(doc); err != nil {
		return fmt.Errorf("reading the host's capabilities: %w", err)
	}
	var models []string
	for _, m := range caps.Host.SecModel {
		if m.Name != "none" && m.Name != "dac" {
			return nil
		}
		models = append(models, m.Name)
	}
	return fmt.Errorf("%w: -s static: the host has no security module to apply a label with (libvirt has: %s)", config.ErrInvalid, strings.Join(models, ", "))
}
