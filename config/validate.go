package config

import (
	"errors"
	"fmt"
	"maps"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/virt-sandbox/virt-sandbox/config/guest"
)

// nameRE keeps names usable as libvirt domain names and as directory names
// in the state directory.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$`)

// MinQEMUMemoryMiB is the least memory a guest kernel and the init boot in.
const MinQEMUMemoryMiB = 64

// Validate reports the first problem in s as a one-line error wrapping
// ErrInvalid and naming the field (by its JSON name) and the bad value.
// It applies the rules of the Parse functions to values set by hand or loaded
// from a file (a service's edited config), and never touches the file system:
// whether host paths exist is for the launcher to find when it prepares the
// run.
func (s *Sandbox) Validate() error {
	if s == nil {
		return fmt.Errorf("%w: no sandbox", ErrInvalid)
	}
	for _, check := range []func() error{
		s.validateName,
		s.validateRoot,
		s.validateDriver,
		s.validateCommand,
		s.validateIdentity,
		s.validateMounts,
		s.validateIncludes,
		s.validateDisks,
		s.validateNetworks,
		s.validateSecurity,
		s.validateKernel,
	} {
		if err := check(); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	return nil
}

func (s *Sandbox) validateRoot() error {
	switch {
	case s.RootImage == "":
		return nil
	case s.Root != "":
		return fmt.Errorf("root %q and root_image %q: give one", s.Root, s.RootImage)
	case !filepath.IsAbs(s.RootImage):
		return fmt.Errorf("root_image %q: not an absolute path", s.RootImage)
	}
	return nil
}

func (s *Sandbox) validateName() error {
	if err := CheckName(s.Name); err != nil {
		return fmt.Errorf("name %q: %v", s.Name, err)
	}
	return nil
}

// CheckName checks a sandbox name; the error is the bare reason.
func CheckName(name string) error {
	if !nameRE.MatchString(name) {
		return errors.New("want 1-64 letters, digits, '_', '.', '+' or '-', starting with a letter or digit")
	}
	return nil
}

func (s *Sandbox) validateDriver() error {
	switch s.Driver {
	case LXC, QEMU:
		return nil
	}
	return fmt.Errorf("driver %q: unknown (want lxc or qemu)", s.Driver)
}

func (s *Sandbox) validateCommand() error {
	c := &s.Command
	if len(c.Argv) == 0 {
		return errors.New("command.argv []: empty (want the program to run)")
	}
	if c.Argv[0] == "" {
		return fmt.Errorf("command.argv[0] %q: empty program name", c.Argv[0])
	}
	for i, a := range c.Argv {
		// exec would fail with EINVAL deep inside the guest; say so here.
		if err := checkNoNUL(a); err != nil {
			return fmt.Errorf("command.argv[%d] %q: %v", i, a, err)
		}
	}
	for i, kv := range c.Env {
		if err := checkEnv(kv); err != nil {
			return fmt.Errorf("command.env[%d] %q: %v", i, kv, err)
		}
	}
	if c.Dir != "" {
		if err := checkPath(c.Dir); err != nil {
			return fmt.Errorf("command.dir %q: %v", c.Dir, err)
		}
	}
	return nil
}

func (s *Sandbox) validateIdentity() error {
	id := &s.Identity
	if id.UID < 0 {
		return fmt.Errorf("identity.uid %d: negative", id.UID)
	}
	if id.GID < 0 {
		return fmt.Errorf("identity.gid %d: negative", id.GID)
	}
	for i, g := range id.Groups {
		if g < 0 {
			return fmt.Errorf("identity.groups[%d] %d: negative", i, g)
		}
	}
	switch id.UserNS {
	case "", UserNSOff:
	case UserNSOn:
		if s.Driver != LXC {
			return fmt.Errorf("identity.userns %q: user namespaces are for LXC sandboxes (a QEMU sandbox's boundary is its own kernel)", id.UserNS)
		}
	default:
		return fmt.Errorf("identity.userns %q: want %q or %q", id.UserNS, UserNSOn, UserNSOff)
	}
	return nil
}

func (s *Sandbox) validateMounts() error {
	seen := make(map[string]int, len(s.Mounts))
	for i, m := range s.Mounts {
		if err := validateMount(m); err != nil {
			return fmt.Errorf("mounts[%d].%v", i, err)
		}
		// Two mounts on one target would leave the first one hidden.
		if j, dup := seen[m.Target]; dup {
			return fmt.Errorf("mounts[%d].target %q: already used by mounts[%d]", i, m.Target, j)
		}
		seen[m.Target] = i
	}
	return nil
}

// validateMount returns an error starting with the field name, for the
// caller to prefix with the mount's index.
// errKernelFSTarget refuses mounts over the sandbox's kernel filesystems,
// which the init and every program need as they are.
var errKernelFSTarget = errors.New("the sandbox's own /dev, /proc and /sys cannot be mounted over (mount somewhere else)")

// kernelFS tells /dev, /proc, /sys and what is inside /proc and /sys; the
// directories in /dev (such as /dev/shm) may take a mount.
func kernelFS(target string) bool {
	for _, d := range []string{"/dev", "/proc", "/sys"} {
		if target == d || (d != "/dev" && strings.HasPrefix(target, d+"/")) {
			return true
		}
	}
	return false
}

// checkMountTarget refuses the targets no mount may take, given clean: the
// root, and the kernel filesystems.
func checkMountTarget(target string) error {
	switch {
	case target == "/":
		return errRootTarget
	case kernelFS(target):
		return errKernelFSTarget
	}
	return nil
}

func validateMount(m Mount) error {
	if !knownMountType(m.Type) {
		return fmt.Errorf("type %q: unknown (want host-bind, host-image, guest-bind or ram)", m.Type)
	}
	if err := checkPath(m.Target); err != nil {
		return fmt.Errorf("target %q: %v", m.Target, err)
	}
	if c := path.Clean(m.Target); c != m.Target {
		return fmt.Errorf("target %q: not clean (want %q)", m.Target, c)
	}
	if err := checkMountTarget(m.Target); err != nil {
		return fmt.Errorf("target %q: %v", m.Target, err)
	}
	if m.Format != "" && m.Type != HostImage {
		return fmt.Errorf("format %q: only host-image mounts have a format", m.Format)
	}
	if err := checkFormat(m.Format); err != nil {
		return fmt.Errorf("format %q: %v", m.Format, err)
	}
	if m.SizeKiB != 0 && m.Type != RAM {
		return fmt.Errorf("size_kib %d: only ram mounts have a size", m.SizeKiB)
	}

	var err error
	switch m.Type {
	case HostBind:
		// An empty source asks the launcher for a fresh temporary directory.
		err = checkPathChars(m.Source)
	case HostImage:
		err = checkHostFile(m.Source)
	case GuestBind:
		if err = checkPath(m.Source); err == nil && path.Clean(m.Source) != m.Source {
			err = fmt.Errorf("not clean (want %q)", path.Clean(m.Source))
		}
	case RAM:
		if m.Source != "" {
			err = errors.New("ram mounts have no source")
		} else if m.SizeKiB == 0 {
			return fmt.Errorf("size_kib %d: ram mounts need a size", m.SizeKiB)
		}
	}
	if err != nil {
		return fmt.Errorf("source %q: %v", m.Source, err)
	}
	return nil
}

func (s *Sandbox) validateDisks() error {
	seen := make(map[string]int, len(s.Disks))
	for i, d := range s.Disks {
		if err := checkTag(d.Tag); err != nil {
			return fmt.Errorf("disks[%d].tag %q: %v", i, d.Tag, err)
		}
		// Both would claim the same /dev/disk/by-tag link.
		if j, dup := seen[d.Tag]; dup {
			return fmt.Errorf("disks[%d].tag %q: already used by disks[%d]", i, d.Tag, j)
		}
		seen[d.Tag] = i
		if err := checkHostFile(d.Source); err != nil {
			return fmt.Errorf("disks[%d].source %q: %v", i, d.Source, err)
		}
		if err := checkFormat(d.Format); err != nil {
			return fmt.Errorf("disks[%d].format %q: %v", i, d.Format, err)
		}
	}
	return nil
}

// UserNetworkIsQEMUs says why -N user is refused on LXC.
const UserNetworkIsQEMUs = "QEMU's user-mode network is for QEMU sandboxes only (an LXC sandbox joins a libvirt network: -N dhcp,source=NET)"

func (s *Sandbox) validateNetworks() error {
	for i, n := range s.Networks {
		if err := validateNetwork(n); err != nil {
			return fmt.Errorf("networks[%d]%v", i, err)
		}
		if n.User && s.Driver != QEMU {
			return fmt.Errorf("networks[%d].user: %s", i, UserNetworkIsQEMUs)
		}
	}
	return nil
}

// validateNetwork returns an error starting with ".field" or ":", for the
// caller to prefix with the network's index.
func validateNetwork(n Network) error {
	for i, a := range n.Addresses {
		if err := checkAddress(a); err != nil {
			return fmt.Errorf(".addresses[%d] %q: %v", i, a, err)
		}
	}
	for i, r := range n.Routes {
		if err := checkRoute(r); err != nil {
			return fmt.Errorf(".routes[%d]: %v", i, err)
		}
	}
	if n.MAC != "" {
		if _, err := normalizeMAC(n.MAC); err != nil {
			return fmt.Errorf(".mac %q: %v", n.MAC, err)
		}
	}
	// Sorted so that the first problem reported is the same every time.
	for _, k := range slices.Sorted(maps.Keys(n.FilterParams)) {
		if err := checkFilterParam(k, n.FilterParams[k]); err != nil {
			return fmt.Errorf(".filter_params: %v", err)
		}
	}
	if err := checkNetworkShape(n); err != nil {
		return fmt.Errorf(": %v", err)
	}
	return nil
}

func (s *Sandbox) validateSecurity() error {
	sec := &s.Security
	switch sec.Label {
	case "", labelDynamic, labelInherit:
		if sec.Value != "" {
			return fmt.Errorf("security.value %q: only a static label has a value", sec.Value)
		}
	case labelStatic:
		if sec.Value == "" {
			return fmt.Errorf("security.value %q: a static label needs a value", sec.Value)
		}
		if err := checkNoNUL(sec.Value); err != nil {
			return fmt.Errorf("security.value %q: %v", sec.Value, err)
		}
	default:
		return fmt.Errorf("security.label %q: unknown (want dynamic, static or inherit)", sec.Label)
	}
	return nil
}

func (s *Sandbox) validateKernel() error {
	k := &s.Kernel
	switch k.VirtType {
	case "", "kvm", "qemu":
	default:
		return fmt.Errorf("kernel.virt_type %q: unknown (want kvm, qemu or empty for automatic)", k.VirtType)
	}
	switch k.ShareFS {
	case "", guest.NinePShares, guest.VirtiofsShares:
	default:
		return fmt.Errorf("kernel.share_fs %q: unknown (want 9p, virtiofs or empty for automatic)", k.ShareFS)
	}
	if s.Driver == QEMU && k.MemoryMiB != 0 && k.MemoryMiB < MinQEMUMemoryMiB {
		return fmt.Errorf("kernel.memory_mib %d: too small for a QEMU guest (want at least %d)", k.MemoryMiB, MinQEMUMemoryMiB)
	}
	return nil
}

// validateIncludes checks that every include lands somewhere writable that
// the sandbox has.
func (s *Sandbox) validateIncludes() error {
	for i, inc := range s.Includes {
		if err := checkPath(inc.Guest); err != nil {
			return fmt.Errorf("includes[%d].guest %q: %v", i, inc.Guest, err)
		}
		if c := path.Clean(inc.Guest); c != inc.Guest {
			return fmt.Errorf("includes[%d].guest %q: not clean (want %q)", i, inc.Guest, c)
		}
		if inc.Host == "" || checkPathChars(inc.Host) != nil {
			return fmt.Errorf("includes[%d].host %q: want a host path", i, inc.Host)
		}
		if !s.Writable(inc.Guest) {
			return fmt.Errorf("includes[%d].guest %q: %s", i, inc.Guest, NotWritable)
		}
	}
	return nil
}

// NotWritable says where a file can be put, for a path that is not there.
const NotWritable = "not in a writable place (the sandbox's own /tmp, /dev/shm or /run, a writable host-bind, host-image or ram mount, or a writable root)"

// Writable tells whether the program can write inside p, an absolute clean
// path: the innermost mount around it decides, a user's mount before the
// sandbox's own /tmp, /dev/shm and /run; outside them, the root.
func (s *Sandbox) Writable(p string) bool {
	target, writable := "/", s.WritableRoot
	for _, d := range guest.PrivateDirs {
		if strings.HasPrefix(p, d+"/") && len(d) > len(target) {
			target, writable = d, true
		}
	}
	for _, m := range s.Mounts {
		if strings.HasPrefix(p, m.Target+"/") && len(m.Target) >= len(target) {
			target, writable = m.Target, m.Type != GuestBind && !m.ReadOnly
		}
	}
	return writable
}
