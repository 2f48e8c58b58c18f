package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/virt-sandbox/virt-sandbox/config/guest"
	"github.com/virt-sandbox/virt-sandbox/kmod"
	"github.com/virt-sandbox/virt-sandbox/sandbox/console"
)

// qemuSteps boot a QEMU sandbox from the initramfs to the program.
var qemuSteps = []step{
	{"kernel filesystems", mountKernelFS},
	{"modules", loadModules},
	{"resume", awaitRun},
	{"channel", openChannel0},
	{"root", mountRoot},
	{"switch root", switchToRoot},
	{"config", loadConfig},
	{"shares", mountShares},
	{"devpts", mountDevpts},
	{"files", setupFiles},
	{"disks", tagDisks},
	{"network", setupNetwork},
	{"run", run},
}

func mountKernelFS(b *boot) error {
	err := mountAll([]mount{
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	})
	if err != nil {
		return err
	}
	// The kernel may have found no /dev/console in the initramfs.
	if c, err := os.OpenFile("/dev/console", os.O_RDWR, 0); err == nil {
		for fd := 0; fd <= 2; fd++ {
			unix.Dup2(int(c.Fd()), fd)
		}
		c.Close()
	}
	return nil
}

// loadModules loads what the launcher put in the initramfs, in its order.
func loadModules(b *boot) error {
	dir := "/" + guest.ModulesDir
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	mods, err := guest.Modules(names)
	if err != nil {
		return err
	}
	for _, m := range mods {
		t := time.Now()
		image, err := kmod.ReadModule(filepath.Join(dir, m.Entry))
		if err != nil {
			return err
		}
		name := kmod.Name(m.File)
		if err := kmod.Load(name, image, ""); err != nil {
			return err
		}
		comp := kmod.Compression(m.File)
		if comp == "" {
			comp = "uncompressed"
		}
		b.logf("module %s (%s, %d bytes) loaded in %v", name, comp, len(image), time.Since(t).Round(time.Microsecond))
	}
	return nil
}

// awaitRun, in a machine booted to be a template, waits on the run channel
// for the run it was restored for: the launcher saves the machine here,
// before anything of a run is mounted (QEMU refuses to save a machine with
// a 9p export mounted), and restores it for each run. The host's time and
// entropy then make the restored machine a machine of now, and of its own.
func awaitRun(b *boot) error {
	if os.Getenv(guest.TemplateEnv) != "1" {
		return nil
	}
	port, err := openVirtioPort(guest.RunChannel, os.O_RDWR, time.Now().Add(10*time.Second))
	if err != nil {
		return err
	}
	defer port.Close()
	msg, err := awaitResume(port)
	if err != nil {
		return err
	}
	m, err := console.DecodeResume(msg)
	if err != nil {
		return err
	}
	tv := unix.NsecToTimeval(m.Time.UnixNano())
	if err := unix.Settimeofday(&tv); err != nil {
		return fmt.Errorf("setting the clock: %w", err)
	}
	b.logf("restored: clock set to %v", m.Time.UTC().Format(time.RFC3339Nano))
	return addEntropy(m.Entropy[:])
}

// resumeWait bounds the wait for the launcher once the machine is restored:
// it connects right after the restore, and a machine whose launcher was
// killed during the restore (which cannot autodestroy) must not wait on.
const resumeWait = 30 * time.Second

// awaitResume says the init is ready every 20 ms and waits, across the
// save and the restore, for the host's resume message. A virtio port polls
// POLLHUP while no host has it open: the builder of the template has it
// open when it saves the machine, so a hang-up after that is a restored
// machine whose launcher is yet to connect, or never will.
func awaitResume(port *os.File) ([]byte, error) {
	fd := int(port.Fd())
	msg := make([]byte, 0, console.ResumeSize)
	var hostSeen bool
	var restored time.Time
	lastReady := time.Time{}
	for len(msg) < cap(msg) {
		events := int16(unix.POLLIN)
		if time.Since(lastReady) >= 20*time.Millisecond {
			events |= unix.POLLOUT
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: events}}
		if _, err := unix.Poll(fds, 20); err != nil && err != unix.EINTR {
			return nil, fmt.Errorf("waiting for the run: %w", err)
		}
		ev := fds[0].Revents
		if ev&unix.POLLOUT != 0 {
			// Only while a host has the port open: a write blocks
			// until one has.
			unix.Write(fd, []byte{console.ReadyByte})
			lastReady = time.Now()
		}
		if ev&unix.POLLIN != 0 {
			n, err := unix.Read(fd, msg[len(msg):cap(msg)])
			if err != nil && err != unix.EINTR && err != unix.EAGAIN {
				return nil, fmt.Errorf("waiting for the run: %w", err)
			}
			if n > 0 {
				msg = msg[:len(msg)+n]
				continue
			}
		}
		// Without a host, the port polls readable (at end of file)
		// and hung up; with one and nothing to read, only writable.
		if ev&unix.POLLHUP == 0 {
			hostSeen, restored = true, time.Time{}
			continue
		}
		if hostSeen && restored.IsZero() {
			restored = time.Now()
		}
		if !restored.IsZero() && time.Since(restored) > resumeWait {
			return nil, fmt.Errorf("restored, but no launcher came within %v", resumeWait)
		}
		// Hung up, the port polls at once.
		time.Sleep(5 * time.Millisecond)
	}
	return msg, nil
}

// addEntropy credits the host's random bytes to the kernel's pool and
// reseeds the generator with them at once.
func addEntropy(seed []byte) error {
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	// struct rand_pool_info: entropy_count (bits), buf_size (bytes), buf.
	info := binary.NativeEndian.AppendUint32(nil, uint32(8*len(seed)))
	info = binary.NativeEndian.AppendUint32(info, uint32(len(seed)))
	info = append(info, seed...)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&info[0]))); e != 0 {
		return fmt.Errorf("adding entropy: %w", e)
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDRESEEDCRNG, 0); e != 0 {
		return fmt.Errorf("reseeding the random number generator: %w", e)
	}
	return nil
}

// openVirtioChannel opens app channel i, a virtio-serial port found by its
// name in sysfs, as udev would; ports show up a little after the driver
// loads.
func openVirtioChannel(i int) (*os.File, error) {
	return openVirtioPort(guest.AppChannelName(i), os.O_RDWR, time.Now().Add(deviceWait))
}

// openVirtioPort opens the virtio-serial port named name with flag (O_RDWR
// and the like), waiting until deadline for it to show up.
func openVirtioPort(name string, flag int, deadline time.Time) (*os.File, error) {
	return waitFor(deadline, time.Millisecond, fmt.Errorf("no virtio port named %s", name), func() (*os.File, bool, error) {
		ports, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
		for _, p := range ports {
			got, err := os.ReadFile(p)
			if err != nil || strings.TrimSpace(string(got)) != name {
				continue
			}
			f, err := os.OpenFile("/dev/"+filepath.Base(filepath.Dir(p)), flag, 0)
			if err == nil || !os.IsNotExist(err) {
				return f, err == nil, err
			}
		}
		return nil, false, nil
	})
}

// ninePOpts are the 9p mount options: a large msize for throughput, and
// the page cache for the read-only root.
const ninePOpts = "trans=virtio,version=9p2000.L,msize=512000"

// hostShare is the mount of the host share tag on target, by the way the
// launcher shares host directories (guest.SharesEnv). ninePCache is the
// cache option of a 9p mount.
func hostShare(tag, target string, flags uintptr, ninePCache string) mount {
	if os.Getenv(guest.SharesEnv) == guest.VirtiofsShares {
		return mount{tag, target, "virtiofs", flags, ""}
	}
	data := ninePOpts
	if ninePCache != "" {
		data += ",cache=" + ninePCache
	}
	return mount{tag, target, "9p", flags, data}
}

// mountRoot mounts the root share read-only, completed with the mount
// points it lacks, with a private /run holding the config share, as the
// LXC driver lays it out.
func mountRoot(b *boot) error {
	share := "/rootshare"
	m, err := rootMount(share)
	if err != nil {
		return err
	}
	if err := mountAll([]mount{m}); err != nil {
		return err
	}
	root, overlaid, err := completeRoot(share, "/overlay")
	if err != nil {
		return err
	}
	b.newRoot, b.overlaid = root, overlaid
	// Held before the sandbox's /run hides it; the config, not read yet,
	// tells whether it is kept (keepRootRun).
	if b.rootRun, err = os.OpenRoot(root + "/run"); err != nil {
		return err
	}
	mounts := []mount{{"tmpfs", root + "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"}}
	if !filesOnChannel() {
		mounts = append(mounts, mount{guest.ConfigTag, root + guest.Dir, "9p", unix.MS_RDONLY, ninePOpts})
	}
	return mountAll(mounts)
}

// rootMount mounts the root share, or the root image's disk when the
// launcher says the root is one.
func rootMount(at string) (mount, error) {
	fstype := os.Getenv(guest.RootFSEnv)
	if fstype == "" {
		return hostShare(guest.RootTag, at, unix.MS_RDONLY, "loose"), nil
	}
	dev, err := blockDevice(guest.RootTag)
	return mount{dev, at, fstype, unix.MS_RDONLY, ""}, err
}

// switchToRoot makes the root /.
func switchToRoot(b *boot) error { return switchRoot(b.newRoot) }

func mountDevpts(b *boot) error {
	return mountAll([]mount{{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "mode=0620,ptmxmode=0666,gid=5"}})
}

// powerOff ends the machine once the program's status is reported; the
// domain's on_poweroff is destroy.
func powerOff() {
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}
