// Command virt-sandbox-virtiofsd is QEMU's virtiofsd serving its export
// read-only, which the virtiofsd of QEMU 7.2 cannot do itself (and libvirt
// 9.0 refuses <readonly/> for virtiofs). libvirt runs it as root in place of
// virtiofsd for a sandbox's read-only shares; it takes virtiofsd's
// arguments.
//
// In a mount namespace of its own it clones the exported tree, marks every
// mount of the clone read-only, mounts the clone on a private tmpfs and
// runs virtiofsd on it. The kernel then refuses every write through the
// export, whatever the guest asks: virtiofsd has no request that remounts.
// The clone lives at a path other than the source, which also lets the
// host's / be exported: virtiofsd binds its source on itself and
// pivot_roots into it, which fails for /.
package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/virt-sandbox/virt-sandbox/sandbox/hostdirs"
)

// virtiofsd is the daemon QEMU 7.2 ships.
const virtiofsd = hostdirs.Virtiofsd

// exportDir is where the read-only clone is mounted, in the private
// namespace only.
const exportDir = "/tmp/virt-sandbox-export"

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "virt-sandbox-virtiofsd:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	args = append([]string(nil), args...)
	i, source := sourceOption(args)
	if i >= 0 {
		if err := readOnlyClone(source); err != nil {
			return fmt.Errorf("read-only export of %s: %w", source, err)
		}
		args[i] = setOption(args[i], "source", exportDir)
	}
	return syscall.Exec(virtiofsd, append([]string{virtiofsd}, args...), os.Environ())
}

// readOnlyClone mounts a read-only recursive clone of source on exportDir
// in a new mount namespace of the calling thread, which the exec of
// virtiofsd keeps.
func readOnlyClone(source string) error {
	runtime.LockOSThread() // the namespace is the thread's until exec
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("unshare: %w", err)
	}
	// Nothing done here may reach the host's namespace.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making mounts private: %w", err)
	}
	tree, err := unix.OpenTree(unix.AT_FDCWD, source, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return fmt.Errorf("open_tree: %w", err)
	}
	defer unix.Close(tree)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		return fmt.Errorf("mount_setattr: %w", err)
	}
	if err := unix.Mount("tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0700"); err != nil {
		return fmt.Errorf("tmpfs: %w", err)
	}
	if err := os.Mkdir(exportDir, 0o700); err != nil {
		return err
	}
	if err := unix.MoveMount(tree, "", unix.AT_FDCWD, exportDir, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount: %w", err)
	}
	return nil
}

// sourceOption finds the -o argument that names the source and the source,
// or -1 when no argument does (--print-capabilities, --help).
func sourceOption(args []string) (int, string) {
	for i := 1; i < len(args); i++ {
		if args[i-1] != "-o" {
			continue
		}
		for _, o := range splitOptions(args[i]) {
			if v, ok := strings.CutPrefix(o, "source="); ok {
				return i, v
			}
		}
	}
	return -1, ""
}

// splitOptions splits a -o list at single commas: a doubled comma is a
// comma of a value, as libvirt escapes them.
func splitOptions(s string) []string {
	var opts []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			if i+1 < len(s) && s[i+1] == ',' {
				cur.WriteByte(',')
				i++
				continue
			}
			opts = append(opts, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(s[i])
	}
	return append(opts, cur.String())
}

// setOption sets option name of a -o list to value.
func setOption(list, name, value string) string {
	opts := splitOptions(list)
	for i, o := range opts {
		if strings.HasPrefix(o, name+"=") {
			opts[i] = name + "=" + strings.ReplaceAll(value, ",", ",,")
		} else {
			opts[i] = strings.ReplaceAll(o, ",", ",,")
		}
	}
	return strings.Join(opts, ",")
}
