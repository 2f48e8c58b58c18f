// Package config defines a sandbox's configuration, what the user asked
// for: what to run, where, as whom, with which files, devices and networks.
// The launcher builds it from flags, validates it, and saves it as
// versioned JSON in the sandbox's state directory beside what it resolved
// for the run (Run, guest.Resolved); the guest init loads the same file.
// It has no dependency on libvirt so the static init can link it.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/virt-sandbox/virt-sandbox/config/guest"
	"github.com/virt-sandbox/virt-sandbox/sandbox/wholefile"
)

// Version is the schema version written into every saved config. The init
// (LoadRun) refuses other versions so a stale init never misreads a newer
// launcher's config. Version 2 moved what the launcher resolves for a run
// (the user namespace's id map, host-image filesystems, LXC disk devices)
// out of the user's config into Run.Resolved.
const Version = 2

// oldestVersion is the oldest version whose user's config Load reads:
// version 1 differs from 2 only in the launcher's fields, which the
// launcher resolves again for each run and service upgrade, so a service
// created by an older build can still be upgraded, stopped or deleted.
const oldestVersion = 1

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
}

// The values of Identity.UserNS.
const (
	UserNSOn  = "on"
	UserNSOff = "off"
)

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
	// (guest-bind) or empty. The launcher makes a host path absolute, and
	// gives an empty host-bind a fresh directory, in the user's config
	// itself: a service's later commands run from other directories and
	// must name the same files.
	Source string `json:"source,omitempty"`
	// Format is a host-image's, as asked or, when not, as the launcher
	// found it; see Disk.Format.
	Format   string `json:"format,omitempty"`
	SizeKiB  uint64 `json:"size_kib,omitempty"`
	ReadOnly bool   `json:"readonly,omitempty"`
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
	Tag string `json:"tag"`
	// Source is made absolute by the launcher, as Mount.Source.
	Source string `json:"source"`
	// Format is the image's format as asked or, when not, as the launcher
	// found it, written into the user's config: a service's image keeps
	// the format it had when the service was made, so that a guest that
	// rewrites a raw image to look like qcow2 (with a backing file of the
	// host's) never has it read as one on a later upgrade.
	Format string `json:"format,omitempty"`
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

// Run is the file the launcher saves for the init (guest.ConfigFile): the
// user's config and what the launcher resolved for the run, one JSON object
// under one version. The user's fields stay at the top level, where a hand
// edit of a service's config finds them.
type Run struct {
	Sandbox
	Resolved guest.Resolved `json:"resolved"`
}

// Save writes s, with res (what the launcher resolved for the run; nil
// for nothing), to path as indented JSON with the current schema version.
// It replaces path whole or not at all: a service's saved config is read
// again by every later command, and one cut short by a full disk would
// leave the service unusable.
func (s *Sandbox) Save(path string, res *guest.Resolved) error {
	r := Run{Sandbox: *s}
	if res != nil {
		r.Resolved = *res
	}
	r.Version = Version
	b, err := json.MarshalIndent(&r, "", "  ")
	if err != nil {
		return err
	}
	return wholefile.WriteBytes(path, append(b, '\n'), 0o644)
}

// Load reads the user's config from a file Save wrote, of this schema
// version or an older one it can read; what the launcher resolved is left
// out: the launcher resolves it anew.
func Load(path string) (*Sandbox, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Decode(b)
}

// Decode is Load of the file's contents.
func Decode(b []byte) (*Sandbox, error) {
	r, err := decode(b, oldestVersion)
	if err != nil {
		return nil, err
	}
	return &r.Sandbox, nil
}

// LoadRun reads a file Save wrote, the user's config and what the launcher
// resolved, as the init does: of this schema version only, whose Resolved
// it needs.
func LoadRun(path string) (*Run, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return decode(b, Version)
}

func decode(b []byte, oldest int) (*Run, error) {
	var r Run
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if r.Version < oldest || r.Version > Version {
		return nil, fmt.Errorf("%w: schema version %d, this build reads %s", ErrInvalid, r.Version, versions(oldest))
	}
	return &r, nil
}

// versions names the schema versions from oldest to Version.
func versions(oldest int) string {
	if oldest == Version {
		return fmt.Sprintf("version %d", Version)
	}
	return fmt.Sprintf("versions %d to %d", oldest, Version)
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
