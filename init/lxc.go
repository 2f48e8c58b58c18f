package main

import (
	"fmt"
	"os"

	"github.com/virt-sandbox/virt-sandbox/config/guest"

	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// lxcSteps bring up an LXC sandbox. libvirt has already mounted the root,
// /proc, /sys, /dev, /dev/pts, a tmpfs on /run, the config share and the
// sources of the user's mounts.
var lxcSteps = []step{
	{"config", loadConfig},
	{"root", enterCustomRoot},
	{"files", setupFiles},
	{"disks", tagDisks},
	{"network", setupNetwork},
	{"channel", openChannel0},
	{"run", run},
}

// lxcChannel is the container's app channel i: libvirt exposes console
// N+1 as /dev/tty(N+1), and console 0 is the log console.
func lxcChannel(i int) string { return fmt.Sprintf("/dev/tty%d", i+2) }

// openLXCChannel opens app channel i in raw mode, because it is a pty and
// by default would turn the protocol's \n bytes into \r\n.
func openLXCChannel(i int) (*os.File, error) {
	path := lxcChannel(i)
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	if _, err := term.MakeRaw(int(f.Fd())); err != nil {
		f.Close()
		return nil, fmt.Errorf("raw mode on %s: %w", path, err)
	}
	// Whatever the line discipline mangled before raw mode is not ours.
	unix.IoctlSetInt(int(f.Fd()), unix.TCFLSH, unix.TCIFLUSH)
	return f, nil
}

// enterCustomRoot switches into a custom root (-r), which the launcher
// shares on a stage rather than as libvirt's root: libvirt makes a
// directory (.oldroot) in the root it is given, and the user's tree must not
// be touched. The stage is first moved out of /run, which moves into it; a
// root without the mount points gets an overlay on the skeleton's /tmp.
// With a user namespace, the root's ids are the sandbox's (an image's
// files of root are its root's): the stage is replaced by an idmapped
// mount of it.
func enterCustomRoot(b *boot) error {
	if _, err := os.Stat(guest.Root); err != nil {
		return nil
	}
	if m := b.resolved.IDMap; m != nil {
		if err := idmapMount(guest.Root, m); err != nil {
			return fmt.Errorf("mapping the root's ids to the user namespace's: %w", err)
		}
	}
	root, overlaid, err := completeRoot(guest.Root, "/tmp")
	if err != nil {
		return err
	}
	b.overlaid = overlaid
	if b.rootRun, err = os.OpenRoot(root + "/run"); err != nil {
		return err
	}
	if overlaid {
		// The overlay holds its own reference to the stage.
		if err := unix.Unmount(guest.Root, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("detaching the root's stage: %w", err)
		}
		return switchRoot(root)
	}
	if err := unix.Mount(guest.Root, "/tmp", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("moving the root out of /run: %w", err)
	}
	return switchRoot("/tmp")
}
