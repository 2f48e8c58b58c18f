package main

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// lxcSteps bring up an LXC sandbox. libvirt has already mounted the root,
// /proc, /sys, /dev, /dev/pts, a tmpfs on /run, the config share and the
// sources of the user's mounts.
var lxcSteps = []step{
	{"config", loadConfig},
	{"files", setupFiles},
	{"disks", tagDisks},
	{"channel", openLXCChannel},
	{"handshake", handshake},
	{"program", runProgram},
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
