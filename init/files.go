package main

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/virt-sandbox/virt-sandbox/config"
	"github.com/virt-sandbox/virt-sandbox/config/guest"
)

// mountShares puts the sources of a QEMU sandbox's mounts on their stages:
// 9p shares for host-bind, disks for host-image. LXC sandboxes get them
// from libvirt.
func mountShares(b *boot) error {
	if b.cfg.Service != nil && !filesOnChannel() {
		if err := mountAll([]mount{{guest.LogTag, guest.Log, "9p", 0, ninePOpts}}); err != nil {
			return err
		}
	}
	for i, m := range b.cfg.Mounts {
		var flags uintptr
		if m.ReadOnly {
			flags = unix.MS_RDONLY
		}
		var mnt mount
		switch m.Type {
		case config.HostBind:
			mnt = hostShare(guest.MountTag(i), guest.MountStage(i), flags, "")
		case config.HostImage:
			dev, err := blockDevice(guest.MountTag(i))
			if err != nil {
				return err
			}
			mnt = mount{dev, guest.MountStage(i), b.resolved.MountFS[i], flags, ""}
		default:
			continue
		}
		if err := mountAll([]mount{mnt}); err != nil {
			return err
		}
	}
	return nil
}

// blockDevice finds the disk whose serial is serial, waiting a bounded time
// for the driver to probe it.
func blockDevice(serial string) (string, error) {
	return waitFor(time.Now().Add(deviceWait), time.Millisecond, fmt.Errorf("no disk with serial %s", serial), func() (string, bool, error) {
		paths, _ := filepath.Glob("/sys/block/*/serial")
		for _, p := range paths {
			if s, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(s)) == serial {
				dev := "/dev/" + filepath.Base(filepath.Dir(p))
				if _, err := os.Stat(dev); err == nil {
					return dev, true, nil
				}
			}
		}
		return "", false, nil
	})
}

// setupFiles lays the user's mounts and includes over the root. A
// read-only root lacking a mount point gets a tmpfs overlay for as long as
// it takes to make them, and is read-only again afterwards.
func setupFiles(b *boot) error {
	cfg := b.cfg
	if !b.overlaid && (cfg.WritableRoot || missingMountPoint(cfg.Mounts)) {
		if err := overlayRoot(); err != nil {
			return fmt.Errorf("overlay root: %w", err)
		}
		b.overlaid = true
	}
	// Before the user's mounts, which may go inside /tmp or over /run.
	if err := mountAll(scratch); err != nil {
		return err
	}
	if err := openRun(b); err != nil {
		return err
	}
	if err := keepRootRun(b); err != nil {
		return err
	}
	mounts := append([]config.Mount(nil), cfg.Mounts...)
	stages := make(map[string]string, len(mounts))
	for i, m := range cfg.Mounts {
		stages[m.Target] = guest.MountStage(i)
	}
	// Parents before what is mounted inside them.
	sort.SliceStable(mounts, func(i, j int) bool {
		return strings.Count(mounts[i].Target, "/") < strings.Count(mounts[j].Target, "/")
	})
	for _, m := range mounts {
		if err := userMount(m, stages[m.Target]); err != nil {
			return fmt.Errorf("-m %s:%s: %w", m.Type, m.Target, err)
		}
	}
	if err := copyIncludes(b); err != nil {
		return err
	}
	if b.overlaid && !cfg.WritableRoot {
		if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("making the root read-only again: %w", err)
		}
	}
	return nil
}

// missingMountPoint tells whether a mount's target is missing from the
// root itself (not from inside another mount, where it can be made).
func missingMountPoint(mounts []config.Mount) bool {
	for _, m := range mounts {
		inside := false
		// The sandbox's own /tmp, /dev/shm and /run are tmpfs.
		for _, d := range guest.PrivateDirs {
			inside = inside || strings.HasPrefix(m.Target, d+"/")
		}
		for _, o := range mounts {
			inside = inside || strings.HasPrefix(m.Target, o.Target+"/")
		}
		if _, err := os.Stat(m.Target); err != nil && !inside {
			return true
		}
	}
	return false
}

func userMount(m config.Mount, stage string) error {
	if err := os.MkdirAll(m.Target, 0o755); err != nil {
		return err
	}
	var err error
	switch m.Type {
	case config.HostBind, config.HostImage:
		err = unix.Mount(stage, m.Target, "", unix.MS_BIND|unix.MS_REC, "")
	case config.GuestBind:
		err = unix.Mount(m.Source, m.Target, "", unix.MS_BIND|unix.MS_REC, "")
	case config.RAM:
		err = unix.Mount("tmpfs", m.Target, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, fmt.Sprintf("size=%dk,mode=1777", m.SizeKiB))
	}
	if err != nil || !m.ReadOnly {
		return err
	}
	return unix.Mount("", m.Target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, "")
}

// overlayRoot replaces the root by an overlay of a tmpfs over it. The
// tmpfs goes on /tmp, a mount point every root has by now; the kernel
// filesystems and /run move into the new root.
func overlayRoot() error {
	root, err := overlay("/", "/tmp")
	if err != nil {
		return err
	}
	return switchRoot(root)
}

// overlay mounts a tmpfs on base and, in it, an overlay of a writable
// layer over the tree at lower; it returns where the overlay is.
func overlay(lower, base string) (string, error) {
	if err := os.MkdirAll(base, 0o755); err != nil {
		return "", err
	}
	if err := unix.Mount("tmpfs", base, "tmpfs", 0, "mode=0755"); err != nil {
		return "", err
	}
	for _, d := range []string{"upper", "work", "root"} {
		if err := os.Mkdir(filepath.Join(base, d), 0o755); err != nil {
			return "", err
		}
	}
	root := base + "/root"
	opts := "lowerdir=" + lower + ",upperdir=" + base + "/upper,workdir=" + base + "/work"
	if err := unix.Mount("overlay", root, "overlay", 0, opts); err != nil {
		return "", fmt.Errorf("overlay over %s: %w", lower, err)
	}
	return root, nil
}

// completeRoot makes a root at dir whole: when it lacks a mount point the
// drivers and the init mount on, an overlay on base is laid over it and
// the missing ones made there. It returns the root to switch to, and
// whether it is that overlay (which is read-only again once the mounts are
// made, unless the root is to be writable).
func completeRoot(dir, base string) (string, bool, error) {
	var missing []string
	for _, d := range guest.RootMountPoints {
		if fi, err := os.Stat(filepath.Join(dir, d)); err != nil || !fi.IsDir() {
			missing = append(missing, d)
		}
	}
	if len(missing) == 0 {
		return dir, false, nil
	}
	root, err := overlay(dir, base)
	if err != nil {
		return "", false, err
	}
	for _, d := range missing {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return "", false, fmt.Errorf("mount point /%s: %w", d, err)
		}
	}
	return root, true, nil
}

// copyIncludes copies the files the launcher staged in the config share to
// their places, owned by the program's identity. The share is read through
// the sandbox's own /run, which a user's mount may hide by now.
func copyIncludes(b *boot) error {
	if len(b.cfg.Includes) == 0 {
		return nil
	}
	id, err := resolveIdentity(b.cfg.Identity)
	if err != nil {
		return err
	}
	uid, gid := hostOwner(id, b.resolved.IDMap)
	owner := func(fs.FileInfo) (int, int) { return uid, gid }
	err = copyTree(b.ownRun.FS(), inRun(filepath.Join(guest.Dir, guest.Includes)), "/", owner, false)
	if err != nil {
		return fmt.Errorf("include %w", err)
	}
	return nil
}

// copyTree copies the tree src of fsys into the directory dst: directories,
// regular files and symbolic links, owned as owner says and with their
// modes (sticky and set-group-id bits too); other kinds of files are left
// out. Directories dst already has are merged into, as they are; other
// names dst has are replaced, or kept when keep says so.
func copyTree(fsys fs.FS, src, dst string, owner func(fs.FileInfo) (uid, gid int), keep bool) error {
	return fs.WalkDir(fsys, src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == src {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if old, err := os.Lstat(to); err == nil {
			if old.IsDir() && fi.IsDir() {
				return nil
			}
			if keep {
				return skip(fi)
			}
			if err := os.RemoveAll(to); err != nil {
				return err
			}
		}
		switch mode := fi.Mode(); {
		case mode.IsDir():
			err = os.Mkdir(to, 0o700)
		case mode&fs.ModeSymlink != 0:
			var link string
			if link, err = fs.ReadLink(fsys, p); err == nil {
				err = os.Symlink(link, to)
			}
		case mode.IsRegular():
			err = copyFile(fsys, p, to, 0o600)
		default:
			return nil
		}
		if err == nil {
			uid, gid := owner(fi)
			err = os.Lchown(to, uid, gid)
		}
		// After the owner: chown clears the set-group-id bit.
		if err == nil && fi.Mode()&fs.ModeSymlink == 0 {
			err = os.Chmod(to, fi.Mode()&(fs.ModePerm|fs.ModeSticky|fs.ModeSetgid|fs.ModeSetuid))
		}
		if err != nil {
			return fmt.Errorf("%s: %w", to, err)
		}
		return nil
	})
}

// skip leaves out of a walk the entry of fi and, for a directory, its
// children.
func skip(fi fs.FileInfo) error {
	if fi.IsDir() {
		return fs.SkipDir
	}
	return nil
}

// fileOwner is a file's own owner, for copyTree.
func fileOwner(fi fs.FileInfo) (uid, gid int) {
	st := fi.Sys().(*syscall.Stat_t)
	return int(st.Uid), int(st.Gid)
}

// keepRootRun copies what a custom root (an image's, -r DIR) has under
// /run into the sandbox's own /run, which hides it: images make
// directories there for their daemons (/run/nginx, /run/postgresql, often
// reached as /var/run), and docker shows them. What the sandbox keeps in
// its /run wins a clash of names. The root step held the root's /run
// (b.rootRun) before it was hidden.
func keepRootRun(b *boot) error {
	if b.rootRun == nil {
		return nil
	}
	defer b.rootRun.Close()
	if b.cfg.Root == "" && b.cfg.RootImage == "" {
		return nil // the host's: its /run is the host's business
	}
	if err := copyTree(b.rootRun.FS(), ".", "/run", fileOwner, true); err != nil {
		return fmt.Errorf("the root's /run: %w", err)
	}
	return nil
}

func copyFile(fsys fs.FS, src, dst string, mode fs.FileMode) error {
	in, err := fsys.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// tagDisks makes /dev/disk/by-tag/TAG for every disk: QEMU disks carry the
// tag as their serial, LXC disks are the host devices the launcher mapped.
func tagDisks(b *boot) error {
	if len(b.cfg.Disks) == 0 {
		return nil
	}
	const dir = "/dev/disk/by-tag"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i, d := range b.cfg.Disks {
		dev := b.resolved.DiskDevices[i]
		if dev == "" {
			var err error
			if dev, err = blockDevice(d.Tag); err != nil {
				return err
			}
		}
		if err := os.Symlink(dev, filepath.Join(dir, d.Tag)); err != nil {
			return err
		}
		// The disk is the sandbox's root's to read and write, also
		// when that is a user namespace's root (the namespace cannot
		// mount it: that takes the host's root).
		if m := b.resolved.IDMap; m != nil {
			if err := os.Chown(dev, m.HostUID(0), m.HostGID(0)); err != nil {
				return fmt.Errorf("--disk %s: %w", d.Tag, err)
			}
		}
	}
	return nil
}
