// Package hostdirs says where virt-sandbox keeps its files on the host, by
// one rule for every kind of file: root's in the system's directories,
// anyone else's in their XDG base directories, as libvirt's session mode
// keeps its own; and where the one host program it runs from a fixed path,
// virtiofsd, is.
package hostdirs

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
)

// Virtiofsd is the virtiofs daemon QEMU 7.2 ships, which read-only shares
// run through cmd/virt-sandbox-virtiofsd and the others directly.
const Virtiofsd = "/usr/lib/qemu/virtiofsd"

// kind is one kind of file: where root keeps it, and the XDG variable and
// the default under the home directory for anyone else.
type kind struct {
	system, variable, underHome string
}

var (
	runtimeKind = kind{"/run", "XDG_RUNTIME_DIR", ""}
	cacheKind   = kind{"/var/cache", "XDG_CACHE_HOME", ".cache"}
	configKind  = kind{"/etc", "XDG_CONFIG_HOME", ".config"}
	dataKind    = kind{"/var/lib", "XDG_DATA_HOME", ".local/share"}
	stateKind   = kind{"/var/log", "XDG_STATE_HOME", ".local/state"}
)

// caller is what the rule depends on: the effective uid, the environment
// and the home directory of the password database.
type caller struct {
	uid        int
	getenv     func(string) string
	passwdHome func() string
}

func current() caller {
	return caller{uid: os.Geteuid(), getenv: os.Getenv, passwdHome: func() string {
		if u, err := user.LookupId(strconv.Itoa(os.Geteuid())); err == nil {
			return u.HomeDir
		}
		return ""
	}}
}

// base is the directory of kind k for c, and whether it is one: a caller
// who is not root and has no XDG_RUNTIME_DIR has no runtime directory.
// Relative values are ignored, as the XDG spec says; so is a relative
// $HOME, for the password database's.
func (c caller) base(k kind) (string, bool) {
	if c.uid == 0 {
		return k.system, true
	}
	if d := c.getenv(k.variable); filepath.IsAbs(d) {
		return d, true
	}
	if k.underHome == "" {
		return "", false
	}
	home := c.getenv("HOME")
	if !filepath.IsAbs(home) {
		home = c.passwdHome()
	}
	if !filepath.IsAbs(home) {
		home = "/"
	}
	return filepath.Join(home, k.underHome), true
}

// runtime is where running sandboxes keep their state. Without a runtime
// directory it is in the temporary directory, private to the caller (the
// launcher checks that it is), rather than under the home directory: it
// holds UNIX sockets, whose paths are short.
func (c caller) runtime() string {
	if d, ok := c.base(runtimeKind); ok {
		return filepath.Join(d, "virt-sandbox")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("virt-sandbox-%d", c.uid))
}

func (c caller) under(k kind, elem ...string) string {
	d, _ := c.base(k)
	return filepath.Join(append([]string{d}, elem...)...)
}

// Runtime holds the state directories of running sandboxes:
// /run/virt-sandbox, $XDG_RUNTIME_DIR/virt-sandbox or /tmp/virt-sandbox-UID.
func Runtime() string { return current().runtime() }

// Cache holds initrds, kernel copies and the KVM verdict:
// /var/cache/virt-sandbox or $XDG_CACHE_HOME/virt-sandbox (~/.cache).
func Cache() string { return current().under(cacheKind, "virt-sandbox") }

// Services holds one directory per service: /etc/virt-sandbox/services or
// $XDG_CONFIG_HOME/virt-sandbox/services (~/.config).
func Services() string { return current().under(configKind, "virt-sandbox", "services") }

// Logs holds one directory per service with its program's output:
// /var/log/virt-sandbox or $XDG_STATE_HOME/virt-sandbox (~/.local/state).
func Logs() string { return current().under(stateKind, "virt-sandbox") }

// Images is the image store: /var/lib/virt-sandbox/images or
// $XDG_DATA_HOME/virt-sandbox/images (~/.local/share).
func Images() string { return current().under(dataKind, "virt-sandbox", "images") }

// SystemdUnits is where units of the caller's services are installed:
// the system's units for root, the caller's user units for anyone else.
func SystemdUnits() string {
	c := current()
	if c.uid == 0 {
		return "/etc/systemd/system"
	}
	return c.under(configKind, "systemd", "user")
}

// LibvirtSessionLogs is where libvirt's session QEMU driver writes each
// domain's log: under the caller's cache directory, by the same rule.
func LibvirtSessionLogs() string { return current().under(cacheKind, "libvirt", "qemu", "log") }
