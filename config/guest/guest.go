// Package guest is the contract between the launcher and the init inside
// the sandbox: the names and layouts both ends must agree on (in-guest
// paths, device tags, channel names, the init's environment, the
// initramfs's module entries). The launcher gives these names to the
// domain and the initramfs; the init looks for them. It imports nothing of
// the project, so both ends (and the static init) can link it.
package guest

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
)

// Paths inside every sandbox. The launcher shares the config directory (the
// run's state directory) and the init binary there, and the init reads them.
const (
	// Dir holds ConfigFile and Includes inside the sandbox.
	Dir = "/run/virt-sandbox"
	// ConfigFile is the name of the config file in Dir (and in the
	// state directory the launcher shares there).
	ConfigFile = "sandbox.json"
	// Includes is the directory of Dir holding the include files, laid
	// out as their guest paths.
	Includes = "includes"
	// Init is where the init binary is in an LXC sandbox.
	Init = "/run/virt-sandbox-init"
	// Root is where an LXC sandbox finds a custom root to switch to.
	Root = "/run/virt-sandbox-root"
	// Log is where a service's log share is; the init appends the
	// program's output to LogFile in it.
	Log     = "/run/virt-sandbox-log"
	LogFile = "program.log"
)

// LXCArg is the init's argument in an LXC container; without it the init
// boots a QEMU machine from its initramfs.
const LXCArg = "lxc"

// The init's environment, which the launcher sets on the kernel command
// line (QEMU) or the container's init environment (LXC).
const (
	// FilesEnv tells where the run's files (the config and the include
	// files) are: FilesOnChannel when the launcher sends them on the app
	// channel, for a sandbox on a remote host that shares no directory
	// with it; otherwise in the config share at Dir.
	FilesEnv       = "VIRT_SANDBOX_FILES"
	FilesOnChannel = "channel"
	// RootFSEnv, in a QEMU init's environment, tells that the root is the
	// disk whose serial is RootTag, a filesystem of that type (a root
	// image), rather than the share of that tag.
	RootFSEnv = "VIRT_SANDBOX_ROOT_FS"
	// SharesEnv tells a QEMU sandbox's init how the root and the host-bind
	// mounts are shared: NinePShares or VirtiofsShares. The config and log
	// shares are 9p always.
	SharesEnv = "VIRT_SANDBOX_SHARES"
	// TemplateEnv, set to "1", tells the init of a machine booted to be a
	// template to wait for its run on RunChannel.
	TemplateEnv = "LIBVIRT_SANDBOX_TEMPLATE"
	// DebugEnv, set to "1", makes the init report its steps from the
	// start, before it has read the config's Debug.
	DebugEnv = "LIBVIRT_SANDBOX_INIT_DEBUG"
)

// RootImageFS is the filesystem of a root image.
const RootImageFS = "squashfs"

// The ways host directories reach a QEMU sandbox.
const (
	NinePShares    = "9p"
	VirtiofsShares = "virtiofs"
)

// The names a QEMU sandbox's devices carry, which the launcher gives and
// the init looks for: the app channel's virtio-serial port and the 9p tags
// of the shares.
const (
	AppChannel = "org.virt-sandbox.app"
	// RunChannel is where the init of a machine restored from a template
	// learns that its run has come (sandbox/console.Resume).
	RunChannel = "org.virt-sandbox.run"
	RootTag    = "sandbox-root"
	ConfigTag  = "sandbox-config"
	LogTag     = "sandbox-log"
)

// SessionChannels is how many app channels a service's sandbox has: each
// carries one session (execute, stop) at a time, so that many may run at
// once. A one-shot sandbox has one.
const SessionChannels = 4

// AppChannels is the number of app channels of a sandbox, a service's or a
// one-shot run's.
func AppChannels(service bool) int {
	if service {
		return SessionChannels
	}
	return 1
}

// AppChannelName names a QEMU sandbox's app channel i.
func AppChannelName(i int) string {
	if i == 0 {
		return AppChannel
	}
	return fmt.Sprintf("%s.%d", AppChannel, i)
}

// DataPorts name a local QEMU sandbox's data ports, the virtio-serial
// ports that carry the program's stdin, stdout and stderr raw beside the
// app channel, in that order.
var DataPorts = [3]string{AppChannel + ".stdin", AppChannel + ".stdout", AppChannel + ".stderr"}

// PrivateDirs are the directories every sandbox has its own of, writable,
// hiding the host's: a tmpfs on each.
var PrivateDirs = []string{"/tmp", "/dev/shm", "/run"}

// RootMountPoints are the directories of the root the drivers and the init
// mount on. A root need not have them: the init makes the missing ones in a
// tmpfs overlay, and the root is read-only again before the program runs.
var RootMountPoints = []string{"dev", "proc", "sys", "run", "tmp"}

// MountTag names the 9p share or disk serial of mount i; disk tags may not
// take the sandbox- prefix, so they never clash.
func MountTag(i int) string { return fmt.Sprintf("sandbox-m%d", i) }

// MountStage is where the source of mount i is put first, inside the
// sandbox's private /run, before the init binds it on its target: a
// target need not exist in a read-only root when the driver mounts.
func MountStage(i int) string { return fmt.Sprintf("/run/virt-sandbox-mnt/%d", i) }

// ModulesDir is where the kernel modules are in a QEMU sandbox's
// initramfs, relative to its root.
const ModulesDir = "modules"

// ModuleEntry names the initramfs entry of the module file at place i of
// the load order: its place, a dash and the file's base name
// (modules/003-9p.ko.xz).
func ModuleEntry(i int, file string) string {
	return path.Join(ModulesDir, fmt.Sprintf("%03d-%s", i, path.Base(file)))
}

// Module is one module entry of ModulesDir.
type Module struct {
	Entry string // the entry's name in ModulesDir
	File  string // the module file's own name, as it was on the host
}

// Modules puts the entries of ModulesDir, by their names, in load order
// (by their place, as a number: it may outgrow three digits) and tells each
// one's module file. A name ModuleEntry did not make is an error: the
// initramfs is not what this init was built for.
func Modules(entries []string) ([]Module, error) {
	type placed struct {
		n int
		m Module
	}
	ps := make([]placed, 0, len(entries))
	for _, e := range entries {
		num, file, ok := strings.Cut(e, "-")
		n, err := strconv.Atoi(num)
		if !ok || err != nil || file == "" || strings.HasPrefix(num, "+") {
			return nil, fmt.Errorf("%s/%s: not a module entry (NNN-file)", ModulesDir, e)
		}
		ps = append(ps, placed{n, Module{Entry: e, File: file}})
	}
	slices.SortStableFunc(ps, func(a, b placed) int { return a.n - b.n })
	mods := make([]Module, len(ps))
	for i, p := range ps {
		mods[i] = p.m
	}
	return mods, nil
}
