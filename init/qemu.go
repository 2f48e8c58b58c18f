package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/virt-sandbox/virt-sandbox/config"
	"github.com/virt-sandbox/virt-sandbox/kmod"
)

const modulesDir = "/modules"

// qemuSteps boot a QEMU sandbox from the initramfs to the program.
var qemuSteps = []step{
	{"kernel filesystems", mountKernelFS},
	{"modules", loadModules},
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
	entries, err := os.ReadDir(modulesDir)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	for _, n := range names {
		t := time.Now()
		image, err := kmod.ReadModule(filepath.Join(modulesDir, n))
		if err != nil {
			return err
		}
		_, file, _ := strings.Cut(n, "-")
		name := kmod.Name(file)
		if err := kmod.Load(name, image, ""); err != nil {
			return err
		}
		comp := kmod.Compression(file)
		if comp == "" {
			comp = "uncompressed"
		}
		b.logf("module %s (%s, %d bytes) loaded in %v", name, comp, len(image), time.Since(t).Round(time.Microsecond))
	}
	return nil
}

// openVirtioChannel opens app channel i, a virtio-serial port found by its
// name in sysfs, as udev would; ports show up a little after the driver
// loads.
func openVirtioChannel(i int) (*os.File, error) {
	return openVirtioPort(config.AppChannelName(i), time.Now().Add(deviceWait))
}

// openVirtioPort opens the virtio-serial port named name, waiting until
// deadline for it to show up.
func openVirtioPort(name string, deadline time.Time) (*os.File, error) {
	return waitFor(deadline, time.Millisecond, fmt.Errorf("no virtio port named %s", name), func() (*os.File, bool, error) {
		ports, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
		for _, p := range ports {
			got, err := os.ReadFile(p)
			if err != nil || strings.TrimSpace(string(got)) != name {
				continue
			}
			f, err := os.OpenFile("/dev/"+filepath.Base(filepath.Dir(p)), os.O_RDWR, 0)
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
// launcher shares host directories (config.SharesArg). ninePCache is the
// cache option of a 9p mount.
func hostShare(tag, target string, flags uintptr, ninePCache string) mount {
	if os.Getenv(config.SharesArg) == config.VirtiofsShares {
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
	mounts := []mount{{"tmpfs", root + "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"}}
	if !filesOnChannel() {
		mounts = append(mounts, mount{config.ConfigTag, root + config.GuestDir, "9p", unix.MS_RDONLY, ninePOpts})
	}
	return mountAll(mounts)
}

// rootMount mounts the root share, or the root image's disk when the
// launcher says the root is one.
func rootMount(at string) (mount, error) {
	fstype := os.Getenv(config.RootFSEnv)
	if fstype == "" {
		return hostShare(config.RootTag, at, unix.MS_RDONLY, "loose"), nil
	}
	dev, err := blockDevice(config.RootTag)
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
