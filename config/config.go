// Package config defines a sandbox's configuration: what to run, where, as whom,
// with which files, devices and networks. The launcher builds it from flags,
// validates it, saves it as versioned JSON in the sandbox's state directory, and
// the guest init loads the same file. It has no dependency on libvirt so the
// static init can link it.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/virt-sandbox/virt-sandbox/sandbox/wholefile"
)

// Version is the schema version written into every saved config. Load refuses
// other versions so a stale init never misreads a newer launcher's config.
const Version = 1

// ErrInvalid is wrapped by every validation and parse error.
var ErrInvalid = errors.New("invalid sandbox config")

// Driver names the libvirt driver a sandbox runs on.
type Driver string

const (
	LXC  Driver = "lxc"
	QEMU Driver = "qemu"
)

// Sandbox is the whole configuration of one sandbox.
type Sandbox struct {
	Version int    `json:"version"`
	Name    string `json:"name"`
	UUID    string `json:"uuid"`
	Driver  Driver `json:"driver"`
	URI     string `json:"uri"`

	// Root is the host directory that becomes the sandbox's /; empty means the host's /.
	Root string `json:"root,omitempty"`
	// RootImage is, instead of Root, a read-only filesystem image of the
	// root (squashfs) on the launcher's machine: how an image's root
	// reaches a remote host, which gets it once as a volume and attaches
	// it as a disk.
	RootImage string `json:"root_image,omitempty"`
	// WritableRoot puts a throw-away tmpfs overlay over the root: the
	// program may write anywhere, and Root (or the host) is never touched.
	WritableRoot bool `json:"writable_root,omitempty"`

	Command  Command   `json:"command"`
	Identity Identity  `json:"identity"`
	Mounts   []Mount   `json:"mounts,omitempty"`
	Includes []Include `json:"includes,omitempty"`
	Disks    []Disk    `json:"disks,omitempty"`
	Networks []Network `json:"networks,omitempty"`
	Security Security  `json:"security"`
	Kernel   Kernel    `json:"kernel"`

	// TTY runs the program on a pseudo-terminal instead of pipes.
	TTY bool `json:"tty,omitempty"`
	// Debug makes the init report its steps on the log console.
	Debug bool `json:"debug,omitempty"`
	// Service, when set, makes the sandbox a long-running service.
	Service *Service `json:"service,omitempty"`
	// Timeout, when not zero, bounds the whole run: the sandbox is
	// destroyed when it expires.
	Timeout time.Duration `json:"timeout,omitempty"`
	// StartTimeout, when not zero, bounds the wait for the init to
	// announce itself; the launcher picks a default per driver otherwise.
	StartTimeout time.Duration `json:"start_timeout,omitempty"`
}

// Service is how a sandbox runs as a long-running service: its init runs
// the program at boot on the log console, keeps its output in the log
// share, restarts it per Restart, and serves execute and stop requests.
type Service struct {
	// Restart is "no" or "on-failure" (exit status not 0).
	Restart string `json:"restart,omitempty"`
	// MaxRestarts bounds on-failure restarts; 0 means DefaultMaxRestarts.
	MaxRestarts int `json:"max_restarts,omitempty"`
}

// DefaultMaxRestarts is how many times on-failure restarts a program.
const DefaultMaxRestarts = 5

// Command is the program to run and its environment.
type Command struct {
	Argv []string `json:"argv"`
	// Env holds KEY=VALUE entries; the program sees exactly these.
	Env []string `json:"env,omitempty"`
	// Dir is the working directory inside the sandbox.
	Dir string `json:"dir,omitempty"`
}

// Identity is who the program runs as.
type Identity struct {
	UID    int    `json:"uid"`
	GID    int    `json:"gid"`
	Groups []int  `json:"groups,omitempty"`
	User   string `json:"user,omitempty"`
	Home   string `json:"home,omitempty"`
	// Privileged runs the program as root with its capabilities kept.
	Privileged bool `json:"privileged,omitempty"`
	// ByName takes UID, GID, Groups and Home from the sandbox's own
	// /etc/passwd entry for User, since that is the root the program sees.
	ByName bool `json:"by_name,omitempty"`
	// UserNS runs the program (LXC) in a user namespace of its own, so
	// that its root is an unprivileged id of the host: "on" or "off".
	UserNS string `json:"userns,omitempty"`
	// IDMap is that namespace's mapping, which the launcher fills in from
	// the host's ranges of subordinate ids.
	IDMap *IDMap `json:"idmap,omitempty"`
}

// The values of Identity.UserNS.
const (
	UserNSOn  = "on"
	UserNSOff = "off"
)

// IDMap maps the ids of a user namespace to the host's.
type IDMap struct {
	UIDs []IDRange `json:"uids"`
	GIDs []IDRange `json:"gids"`
}

// IDRange maps Count ids from Inside on to the host's from Outside on, as
// a line of /proc/PID/uid_map.
type IDRange struct {
	Inside  int `json:"inside"`
	Outside int `json:"outside"`
	Count   int `json:"count"`
}

// HostUID is the host's uid for uid inside the namespace; -1 when it is
// not mapped.
func (m *IDMap) HostUID(uid int) int { return toHost(m.UIDs, uid) }

// HostGID is HostUID for group ids.
func (m *IDMap) HostGID(gid int) int { return toHost(m.GIDs, gid) }

func toHost(ranges []IDRange, id int) int {
	for _, r := range ranges {
		if id >= r.Inside && id < r.Inside+r.Count {
			return r.Outside + id - r.Inside
		}
	}
	return -1
}

// MountType is the kind of a -m mount.
type MountType string

const (
	HostBind  MountType = "host-bind"
	HostImage MountType = "host-image"
	GuestBind MountType = "guest-bind"
	RAM       MountType = "ram"
)

// Mount is one filesystem the sandbox sees at Target.
type Mount struct {
	Type   MountType `json:"type"`
	Target string    `json:"target"`
	// Source is a host path (host-bind, host-image), a sandbox path
	// (guest-bind) or empty.
	Source   string `json:"source,omitempty"`
	Format   string `json:"format,omitempty"`
	SizeKiB  uint64 `json:"size_kib,omitempty"`
	ReadOnly bool   `json:"readonly,omitempty"`
	// FSType is the filesystem of a host-image, found by the launcher.
	FSType string `json:"fstype,omitempty"`
}

// UnderMount tells whether the sandbox path p is a mount's target or lies
// inside one.
func UnderMount(mounts []Mount, p string) bool {
	for _, m := range mounts {
		if p == m.Target || strings.HasPrefix(p, m.Target+"/") {
			return true
		}
	}
	return false
}

// Include is a host file or directory copied into the sandbox at Guest,
// which must lie in a writable mount or a writable root.
type Include struct {
	Guest string `json:"guest"`
	Host  string `json:"host"`
}

// Disk is a block device shown at /dev/disk/by-tag/Tag.
type Disk struct {
	Tag    string `json:"tag"`
	Source string `json:"source"`
	Format string `json:"format,omitempty"`
	// Device is the host block device an LXC sandbox is given for it,
	// set by the launcher for the run.
	Device string `json:"device,omitempty"`
}

// Network is one interface of the sandbox.
type Network struct {
	DHCP bool `json:"dhcp,omitempty"`
	// User is QEMU's user-mode network (slirp) instead of a libvirt
	// network: outgoing connections through the caller's own sockets,
	// which needs no rights on the host, so a qemu:///session caller can
	// have it. Its address comes by DHCP.
	User      bool     `json:"user,omitempty"`
	Addresses []string `json:"addresses,omitempty"`
	Routes    []Route  `json:"routes,omitempty"`
	// Source is the libvirt network the interface attaches to.
	Source       string            `json:"source,omitempty"`
	MAC          string            `json:"mac,omitempty"`
	Filter       string            `json:"filter,omitempty"`
	FilterParams map[string]string `json:"filter_params,omitempty"`
}

// Route is a static route: Dest (CIDR) via Gateway.
type Route struct {
	Dest    string `json:"dest"`
	Gateway string `json:"gateway"`
}

// Security selects the domain's security label.
type Security struct {
	// Label is "dynamic" (the default), "static" or "inherit".
	Label string `json:"label,omitempty"`
	// Value is the static label.
	Value string `json:"value,omitempty"`
}

// Kernel is the machine a sandbox runs on: a QEMU sandbox boots its kernel
// and modules; both drivers take its memory and vCPUs.
type Kernel struct {
	Path       string `json:"path,omitempty"`
	Version    string `json:"version,omitempty"`
	ModulesDir string `json:"modules_dir,omitempty"`
	MemoryMiB  uint64 `json:"memory_mib,omitempty"`
	VCPUs      uint   `json:"vcpus,omitempty"`
	// VirtType is "kvm" or "qemu" (TCG); empty means choose automatically.
	VirtType string `json:"virt_type,omitempty"`
	// Cmdline is appended to the kernel command line.
	Cmdline string `json:"cmdline,omitempty"`
	// ShareFS is how host directories reach the machine:
	// guest.NinePShares, guest.VirtiofsShares, or empty to choose by where the sandbox runs.
	ShareFS string `json:"share_fs,omitempty"`
	// ColdBoot boots the kernel even where the machine could be restored
	// from a booted template.
	ColdBoot bool `json:"cold_boot,omitempty"`
}

// Save writes s to path as indented JSON with the current schema version.
// It replaces path whole or not at all: a service's saved config is read
// again by every later command, and one cut short by a full disk would
// leave the service unusable.
func (s *Sandbox) Save(path string) error {
	c := *s
	c.Version = Version
	b, err := json.MarshalIndent(&c, "", "  ")
	if err != nil {
		return err
	}
	return wholefile.WriteBytes(path, append(b, '\n'), 0o644)
}

// Load reads a config saved by Save and checks its schema version.
func Load(path string) (*Sandbox, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Decode(b)
}

// Decode parses a saved config and checks its schema version.
func Decode(b []byte) (*Sandbox, error) {
	var s Sandbox
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if s.Version != Version {
		return nil, fmt.Errorf("%w: schema version %d, this build reads version %d", ErrInvalid, s.Version, Version)
	}
	return &s, nil
}

// Remote tells a libvirt URI of another machine, one with a host or a
// network transport (qemu+ssh://host/system, lxc+tcp://host/,
// qemu+ssh:///system), from one of this machine (lxc:///, qemu:///system,
// qemu+unix:///system, qemu:///embed?root=DIR). The files a remote
// sandbox's config names are that machine's.
func Remote(uri string) bool {
	u, err := url.Parse(uri)
	if err != nil {
		return true
	}
	_, transport, _ := strings.Cut(u.Scheme, "+")
	return u.Host != "" || (transport != "" && transport != "unix")
}
