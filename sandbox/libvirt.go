package sandbox

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"libvirt.org/go/libvirt"
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
		return nil, libvirtError("connecting to "+uri, err)
	}
	return conn, nil
}

// libvirtError makes one line of a libvirt error: libvirt's own messages
// can span lines.
func libvirtError(doing string, err error) error {
	var le libvirt.Error
	if errors.As(err, &le) {
		return fmt.Errorf("%s: %s", doing, strings.Join(strings.Fields(le.Message), " "))
	}
	return fmt.Errorf("%s: %w", doing, err)
}
