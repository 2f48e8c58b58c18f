package main

import (
	"fmt"
	"os"

	"github.com/virt-sandbox/virt-sandbox/config"

	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// lxcSteps bring up an LXC sandbox. libvirt has already mounted the root,
// /proc, /sys, /dev, /dev/pts, a tmpfs on /run, the config share and the
// sources of the user's mounts.
var lxcSteps = []step{
	{"root", enterCustomRoot},
	{"config", loadConfig},
	{"files", setupFiles},
	{"disks", tagDisks},
	{"network", setupNetwork},
	{"channel", openLXCChannel},
	{"run", run},
}

// lxcChannel is the container's second console: libvirt exposes console N+1
// as /dev/tty(N+1).
const lxcChannel = "/dev/tty2"

// openLXCChannel opens the app channel in raw mode, because it is a pty and
// by default it would turn the protocol's \n bytes into \r\n.
func openLXCChannel(b *boot) error {
	f, err := os.OpenFile(lxcChannel, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return err
	}
	if _, err := term.MakeRaw(int(f.Fd())); err != nil {
		f.Close()
		return fmt.Errorf("raw mode on %s: %w", lxcChannel, err)
	}
	// Whatever the line discipline mangled before raw mode is not ours.
	unix.IoctlSetInt(int(f.Fd()), unix.TCFLSH, unix.TCIFLUSH)
	b.channel = f
	return nil
}

// enterCustomRoot switches into a custom root (-r), which the launcher
// shares on a stage rather than as libvirt's root: libvirt makes a
// directory (.oldroot) in the root it is given, and the user's tree must not
// be touched. The stage is first moved out of /run, which moves into it; a
// root without the mount points gets an overlay on the skeleton's /tmp.
func enterCustomRoot(b *boot) error {
	if _, err := os.Stat(config.GuestRoot); err != nil {
		return nil
	}
	root, overlaid, err := completeRoot(config.GuestRoot, "/tmp")
	if err != nil {
		return err
	}
	b.overlaid = overlaid
	if overlaid {
		// The overlay holds its own reference to the stage.
		if err := unix.Unmount(config.GuestRoot, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("detaching the root's stage: %w", err)
		}
		return switchRoot(root)
	}
	if err := unix.Mount(config.GuestRoot, "/tmp", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("moving the root out of /run: %w", err)
	}
	return switchRoot("/tmp")
}
