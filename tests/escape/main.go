// Command escape tries, from inside a sandbox, what a sandbox must not
// let a program do to its host, and prints one line per attempt:
// "NAME allowed" or "NAME denied: REASON". It changes nothing it can
// avoid changing: files it may write are the test's own, sysctls and
// devices are opened for writing but never written, the clock is set to
// what it reads, a module that loads is not a module.
//
// tests/escape_test.go runs it in each configuration of the suite and
// judges the lines against its table.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

var (
	probe   = flag.String("probe", "", "a directory of the read-only root, writable by anyone on the host")
	roBind  = flag.String("ro-bind", "", "where a read-only host-bind of a directory writable by anyone is")
	secret  = flag.String("secret", "", "a host file that was not shared")
	hostPID = flag.Int("host-pid", 0, "a host process's pid")
	disk    = flag.Uint64("disk", 0, "the device number of the host's root filesystem")
	tag     = flag.String("tag", "escape", "what the names of the files it writes start with")
)

// attempt is one try; it returns nil when it was allowed.
type attempt struct {
	name string
	try  func() error
}

func main() {
	flag.Parse()
	// ptrace attaches to a thread.
	runtime.LockOSThread()
	for _, a := range attempts() {
		if err := a.try(); err != nil {
			fmt.Printf("%s denied: %v\n", a.name, err)
		} else {
			fmt.Printf("%s allowed\n", a.name)
		}
	}
}

func attempts() []attempt {
	return []attempt{
		{"write-ro-root", func() error { return create(filepath.Join(*probe, *tag+"-write-ro-root")) }},
		{"remount-root-rw", func() error { return remountAndCreate(*probe, *tag+"-remount-root-rw") }},
		{"write-ro-bind", func() error { return create(filepath.Join(*roBind, *tag+"-write-ro-bind")) }},
		{"remount-bind-rw", func() error { return remountAndCreate(*roBind, *tag+"-remount-bind-rw") }},
		{"write-proc-sys", func() error { return openForWrite("/proc/sys/kernel/core_pattern") }},
		{"write-sys", func() error { return openForWrite("/sys/kernel/mm/transparent_hugepage/enabled") }},
		{"write-sysrq-trigger", func() error { return openForWrite("/proc/sysrq-trigger") }},
		{"mount-tmpfs", mountTmpfs},
		{"mknod-block", mknodBlock},
		{"load-module", loadModule},
		{"set-clock", setClock},
		{"signal-init", func() error { return unix.Kill(1, 0) }},
		{"signal-host-process", func() error { return unix.Kill(*hostPID, 0) }},
		{"ptrace-init", ptraceInit},
		{"libvirt-socket", libvirtSocket},
		{"read-etc-shadow", func() error { return readFile("/etc/shadow") }},
		{"read-root-home", func() error { _, err := os.ReadDir("/root"); return err }},
		{"read-unshared", func() error { return readFile(*secret) }},
		{"bind-symlink-absolute", func() error { return readFile(filepath.Join(*roBind, "absolute")) }},
		{"bind-symlink-relative", func() error { return readFile(filepath.Join(*roBind, "relative")) }},
		{"bind-dotdot", bindDotDot},
		{"raw-socket", rawSocket},
		// Last: it takes /tmp away.
		{"unmount-to-reveal", unmountToReveal},
	}
}

func create(p string) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

// remountAndCreate makes the mount dir is on read-write, as a bind
// (mount -o bind,remount,rw) and as a whole (mount -o remount,rw), and
// creates name in dir.
func remountAndCreate(dir, name string) error {
	var err error
	for _, flags := range []uintptr{unix.MS_REMOUNT | unix.MS_BIND, unix.MS_REMOUNT} {
		if err = unix.Mount("", mountPointOf(dir), "", flags, ""); err != nil {
			err = fmt.Errorf("remount: %w", err)
			continue
		}
		if err = create(filepath.Join(dir, name)); err == nil {
			return nil
		}
	}
	return err
}

// mountPointOf is the mount point dir is on, from /proc/self/mountinfo.
func mountPointOf(dir string) string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	best := "/"
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 5 {
			continue
		}
		mp := f[4]
		if (dir == mp || strings.HasPrefix(dir, strings.TrimSuffix(mp, "/")+"/")) && len(mp) > len(best) {
			best = mp
		}
	}
	return best
}

// unmountToReveal takes the sandbox's private /tmp away to reach the
// host's, where the unshared secret is.
func unmountToReveal() error {
	if err := unix.Unmount("/tmp", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("umount /tmp: %w", err)
	}
	return readFile(*secret)
}

func openForWrite(p string) error {
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

func mountTmpfs() error {
	dir, err := os.MkdirTemp("", "escape-mnt")
	if err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, ""); err != nil {
		return err
	}
	return unix.Unmount(dir, 0)
}

// mknodBlock makes a node of the host's root filesystem's device and
// reads from it.
func mknodBlock() error {
	p := filepath.Join(os.TempDir(), "escape-blk")
	if err := unix.Mknod(p, unix.S_IFBLK|0o600, int(*disk)); err != nil {
		return fmt.Errorf("mknod: %w", err)
	}
	defer os.Remove(p)
	return readFile(p)
}

// loadModule offers the kernel a module that is not one: refused with
// EPERM without the right (ENOSYS on a kernel without modules), and as no
// module (ENOEXEC) with it.
func loadModule() error {
	err := unix.InitModule([]byte("not a module"), "")
	if err == unix.EPERM || err == unix.ENOSYS {
		return err
	}
	return nil
}

// setClock sets the clock to what it reads.
func setClock() error {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_REALTIME, &ts); err != nil {
		return err
	}
	return unix.ClockSettime(unix.CLOCK_REALTIME, &ts)
}

// ptraceInit seizes the init, which does not stop it; the tracee goes free
// when this program ends.
func ptraceInit() error {
	return unix.PtraceSeize(1)
}

func libvirtSocket() error {
	var errs []string
	for _, p := range []string{"/run/libvirt/libvirt-sock", "/var/run/libvirt/libvirt-sock", "/run/libvirt/libvirt-sock-ro"} {
		c, err := net.DialTimeout("unix", p, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		errs = append(errs, err.Error())
	}
	return fmt.Errorf("%s", strings.Join(errs, "; "))
}

func readFile(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.Read(make([]byte, 1))
	return err
}

// bindDotDot climbs out of the bind with ".." to where the secret is on
// the host.
func bindDotDot() error {
	rel, err := filepath.Rel(*roBind, *secret)
	if err != nil {
		return err
	}
	return readFile(*roBind + "/" + rel)
}

func rawSocket() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP)
	if err != nil {
		return err
	}
	return unix.Close(fd)
}
