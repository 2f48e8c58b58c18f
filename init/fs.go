package main

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// mount is one entry of a mount table.
type mount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

func mountAll(table []mount) error {
	for _, m := range table {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
		}
	}
	return nil
}

// scratch is what every sandbox gets private and writable whatever its root.
var scratch = []mount{
	{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	{"shm", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
}

// switchRoot makes dir the root, with the kernel filesystems and /run moved
// along (those that are mounted). A root that cannot be pivoted away from
// (the initramfs) or whose mounts are kept is moved over and chrooted into.
func switchRoot(dir string) error {
	for _, d := range []string{"/dev", "/proc", "/sys", "/run"} {
		err := unix.Mount(d, dir+d, "", unix.MS_MOVE, "")
		// EINVAL or ENOENT: not mounted here, nothing to move.
		if err != nil && err != unix.EINVAL && err != unix.ENOENT {
			return fmt.Errorf("moving %s into the new root: %w", d, err)
		}
	}
	if err := unix.Chdir(dir); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("moving the new root to /: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return err
	}
	return unix.Chdir("/")
}
