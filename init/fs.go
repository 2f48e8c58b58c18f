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
