package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

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

// openRun holds the sandbox's own /run open before the user's mounts: one
// of them may hide it (-m host-bind:/run=DIR), and what the init keeps
// there (the config share, the log share, the network files) must neither
// vanish nor be written into the user's directory.
func openRun(b *boot) error {
	r, err := os.OpenRoot("/run")
	if err != nil {
		return err
	}
	b.ownRun = r
	return nil
}

// inRun names a path of the sandbox's own /run for b.ownRun.
func inRun(p string) string {
	rel, _ := strings.CutPrefix(p, "/run/")
	return rel
}

// writeIn writes content to rel under root, making its parents.
func writeIn(root *os.Root, rel, content string) error {
	if err := root.MkdirAll(filepath.Dir(rel), 0o755); err != nil {
		return err
	}
	return root.WriteFile(rel, []byte(content), 0o644)
}

// bindFrom binds rel under root on target. The source is named by a file
// descriptor, not a path: the path may be hidden by then.
func bindFrom(root *os.Root, rel, target string) error {
	f, err := root.OpenFile(rel, unix.O_PATH, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	tree, err := unix.OpenTree(int(f.Fd()), "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
	if err != nil {
		return fmt.Errorf("open_tree: %w", err)
	}
	defer unix.Close(tree)
	if err := unix.MoveMount(tree, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount: %w", err)
	}
	return nil
}
