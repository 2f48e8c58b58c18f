package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/virt-sandbox/virt-sandbox/config/guest"
)

// validSandbox is the smallest config Validate accepts.
func validSandbox() *Sandbox {
	return &Sandbox{
		Name:    "demo",
		Driver:  LXC,
		Command: Command{Argv: []string{"/bin/sh"}},
	}
}

// fullSandbox sets every field, so round trips cover them all.
func fullSandbox() *Sandbox {
	return &Sandbox{
		Version: Version,
		Name:    "demo-1.0+x_y",
		UUID:    "c7a5fdbd-edaf-9455-926a-d65c16db1809",
		Driver:  QEMU,
		URI:     "qemu:///session",
		Root:    "/var/lib/sandbox/root",
		Command: Command{
			Argv: []string{"/bin/sh", "-c", "echo \"$FOO\" | tr a-z A-Z"},
			Env:  []string{"FOO=bar", "EMPTY=", "EQ=a=b", "PATH=/usr/bin:/bin"},
			Dir:  "/srv",
		},
		Identity: Identity{UID: 1000, GID: 1000, Groups: []int{10, 1000}, User: "alice", Home: "/home/alice", Privileged: true},
		Mounts: []Mount{
			{Type: HostBind, Target: "/data", Source: "/srv/data", ReadOnly: true},
			{Type: HostBind, Target: "/scratch"},
			{Type: HostImage, Target: "/img", Source: "/var/lib/a.qcow2", Format: "qcow2"},
			{Type: GuestBind, Target: "/home", Source: "/tmp/home"},
			{Type: RAM, Target: "/tmp", SizeKiB: 3 << 20},
		},
		Disks: []Disk{
			{Tag: "data", Source: "/var/lib/data.img", Format: "raw"},
			{Tag: "db", Source: "/var/lib/db.qcow2", Format: "qcow2"},
		},
		Networks: []Network{
			{DHCP: true, Source: "default", MAC: "52:54:00:12:34:56", Filter: "clean-traffic", FilterParams: map[string]string{"IP": "10.0.0.9", "CTRL_IP_LEARNING": "none"}},
			{
				Addresses: []string{"192.168.122.10/24%192.168.122.255", "2001:db8::10/64"},
				Routes:    []Route{{Dest: "0.0.0.0/0", Gateway: "192.168.122.1"}, {Dest: "::/0", Gateway: "2001:db8::1"}},
				Source:    "private",
			},
			{User: true, DHCP: true, MAC: "52:54:00:12:34:57"},
		},
		Security: Security{Label: "static", Value: "system_u:system_r:svirt_t:s0:c412,c355"},
		Kernel: Kernel{
			Path:       "/boot/vmlinuz-6.1.0",
			Version:    "6.1.0",
			ModulesDir: "/lib/modules/6.1.0",
			MemoryMiB:  512,
			VCPUs:      2,
			VirtType:   "kvm",
			Cmdline:    "quiet loglevel=3",
		},
		TTY:   true,
		Debug: true,
	}
}

func TestValidate(t *testing.T) {
	for _, tt := range []struct {
		name    string
		mod     func(*Sandbox)
		wantErr string
	}{
		{name: "minimal", mod: func(*Sandbox) {}},
		{name: "full", mod: func(s *Sandbox) { *s = *fullSandbox() }},
		{name: "qemu default memory", mod: func(s *Sandbox) { s.Driver = QEMU }},
		{name: "qemu least memory", mod: func(s *Sandbox) { s.Driver = QEMU; s.Kernel.MemoryMiB = 64 }},
		{name: "lxc ignores kernel memory", mod: func(s *Sandbox) { s.Kernel.MemoryMiB = 1 }},
		{name: "security dynamic", mod: func(s *Sandbox) { s.Security = Security{Label: "dynamic"} }},
		{name: "security inherit", mod: func(s *Sandbox) { s.Security = Security{Label: "inherit"} }},
		{name: "argv may hold empty args", mod: func(s *Sandbox) { s.Command.Argv = []string{"/bin/echo", ""} }},
		{name: "relative program", mod: func(s *Sandbox) { s.Command.Argv = []string{"sh"} }},

		{name: "nil-safe", mod: nil, wantErr: "no sandbox"},
		{name: "empty name", mod: func(s *Sandbox) { s.Name = "" }, wantErr: `name "": want 1-64`},
		{name: "name with slash", mod: func(s *Sandbox) { s.Name = "a/b" }, wantErr: `name "a/b"`},
		{name: "name with dot first", mod: func(s *Sandbox) { s.Name = ".x" }, wantErr: `name ".x"`},
		{name: "name too long", mod: func(s *Sandbox) { s.Name = strings.Repeat("n", 65) }, wantErr: `name "` + strings.Repeat("n", 65) + `"`},
		{name: "name with newline", mod: func(s *Sandbox) { s.Name = "a\nb" }, wantErr: `name "a\nb"`},
		{name: "no driver", mod: func(s *Sandbox) { s.Driver = "" }, wantErr: `driver "": unknown (want lxc or qemu)`},
		{name: "bad driver", mod: func(s *Sandbox) { s.Driver = "xen" }, wantErr: `driver "xen"`},
		{name: "no argv", mod: func(s *Sandbox) { s.Command.Argv = nil }, wantErr: `command.argv []: empty`},
		{name: "empty program", mod: func(s *Sandbox) { s.Command.Argv = []string{""} }, wantErr: `command.argv[0] "": empty program name`},
		{name: "NUL in argv", mod: func(s *Sandbox) { s.Command.Argv = []string{"/bin/echo", "a\x00"} }, wantErr: `command.argv[1] "a\x00": contains a NUL byte`},
		{name: "bad env", mod: func(s *Sandbox) { s.Command.Env = []string{"A=1", "1B=2"} }, wantErr: `command.env[1] "1B=2": name "1B"`},
		{name: "env without =", mod: func(s *Sandbox) { s.Command.Env = []string{"A"} }, wantErr: `command.env[0] "A": missing "="`},
		{name: "relative dir", mod: func(s *Sandbox) { s.Command.Dir = "srv" }, wantErr: `command.dir "srv": not absolute`},
		{name: "negative uid", mod: func(s *Sandbox) { s.Identity.UID = -1 }, wantErr: `identity.uid -1: negative`},
		{name: "negative gid", mod: func(s *Sandbox) { s.Identity.GID = -2 }, wantErr: `identity.gid -2: negative`},
		{name: "negative group", mod: func(s *Sandbox) { s.Identity.Groups = []int{1, -3} }, wantErr: `identity.groups[1] -3: negative`},
		{name: "userns unknown", mod: func(s *Sandbox) { s.Identity.UserNS = "yes" }, wantErr: `identity.userns "yes": want "on" or "off"`},
		{name: "userns on QEMU", mod: func(s *Sandbox) { s.Driver = QEMU; s.Identity.UserNS = UserNSOn }, wantErr: `identity.userns "on": user namespaces are for LXC sandboxes`},
		{name: "mount type", mod: addMount(Mount{Type: "nfs", Target: "/x"}), wantErr: `mounts[0].type "nfs": unknown`},
		{name: "mount no target", mod: addMount(Mount{Type: HostBind}), wantErr: `mounts[0].target "": empty`},
		{name: "mount relative target", mod: addMount(Mount{Type: HostBind, Target: "x"}), wantErr: `mounts[0].target "x": not absolute`},
		{name: "mount unclean target", mod: addMount(Mount{Type: HostBind, Target: "/x/../y/"}), wantErr: `mounts[0].target "/x/../y/": not clean (want "/y")`},
		{name: "mount on root", mod: addMount(Mount{Type: HostBind, Target: "/"}), wantErr: `mounts[0].target "/": cannot mount over /`},
		{name: "mount duplicate target", mod: addMount(Mount{Type: HostBind, Target: "/x"}, Mount{Type: RAM, Target: "/y", SizeKiB: 1}, Mount{Type: RAM, Target: "/x", SizeKiB: 1}), wantErr: `mounts[2].target "/x": already used by mounts[0]`},
		{name: "format on bind", mod: addMount(Mount{Type: HostBind, Target: "/x", Format: "raw"}), wantErr: `mounts[0].format "raw": only host-image`},
		{name: "bad image format", mod: addMount(Mount{Type: HostImage, Target: "/x", Source: "/a", Format: "vmdk"}), wantErr: `mounts[0].format "vmdk": unknown`},
		{name: "image without source", mod: addMount(Mount{Type: HostImage, Target: "/x"}), wantErr: `mounts[0].source "": empty`},
		{name: "guest-bind relative", mod: addMount(Mount{Type: GuestBind, Target: "/x", Source: "y"}), wantErr: `mounts[0].source "y": not absolute`},
		{name: "guest-bind unclean", mod: addMount(Mount{Type: GuestBind, Target: "/x", Source: "/y/"}), wantErr: `mounts[0].source "/y/": not clean (want "/y")`},
		{name: "ram without size", mod: addMount(Mount{Type: RAM, Target: "/x"}), wantErr: `mounts[0].size_kib 0: ram mounts need a size`},
		{name: "ram with source", mod: addMount(Mount{Type: RAM, Target: "/x", Source: "/y", SizeKiB: 1}), wantErr: `mounts[0].source "/y": ram mounts have no source`},
		{name: "size on bind", mod: addMount(Mount{Type: HostBind, Target: "/x", SizeKiB: 5}), wantErr: `mounts[0].size_kib 5: only ram`},
		{name: "disk tag", mod: addDisk(Disk{Tag: "../x", Source: "/a"}), wantErr: `disks[0].tag "../x"`},
		{name: "disk duplicate tag", mod: addDisk(Disk{Tag: "a", Source: "/a"}, Disk{Tag: "a", Source: "/b"}), wantErr: `disks[1].tag "a": already used by disks[0]`},
		{name: "disk no source", mod: addDisk(Disk{Tag: "a"}), wantErr: `disks[0].source "": empty`},
		{name: "disk format", mod: addDisk(Disk{Tag: "a", Source: "/a", Format: "vdi"}), wantErr: `disks[0].format "vdi": unknown`},
		{name: "network empty", mod: addNet(Network{Source: "default"}), wantErr: `networks[0]: needs dhcp, user or address=`},
		{name: "network user on LXC", mod: addNet(Network{User: true, DHCP: true}), wantErr: `networks[0].user: QEMU's user-mode network is for QEMU sandboxes only`},
		{name: "network user and source", mod: addNet(Network{User: true, DHCP: true, Source: "default"}), wantErr: `networks[0]: user cannot be combined with source=`},
		{name: "network dhcp and address", mod: addNet(Network{DHCP: true, Addresses: []string{"10.0.0.1/8"}}), wantErr: `networks[0]: dhcp cannot be combined with addresses ["10.0.0.1/8"]`},
		{name: "network bad address", mod: addNet(Network{DHCP: true}, Network{Addresses: []string{"10.0.0.1/8", "10.0.0.300/8"}}), wantErr: `networks[1].addresses[1] "10.0.0.300/8"`},
		{name: "network route without gateway", mod: addNet(Network{Addresses: []string{"10.0.0.1/8"}, Routes: []Route{{Dest: "0.0.0.0/0"}}}), wantErr: `networks[0].routes[0]: missing gateway`},
		{name: "network bad route", mod: addNet(Network{Addresses: []string{"10.0.0.1/8"}, Routes: []Route{{Dest: "0.0.0.0", Gateway: "10.0.0.1"}}}), wantErr: `networks[0].routes[0]: destination "0.0.0.0"`},
		{name: "network route with dhcp", mod: addNet(Network{DHCP: true, Routes: []Route{{Dest: "0.0.0.0/0", Gateway: "10.0.0.1"}}}), wantErr: `networks[0]: route= needs address=`},
		{name: "network bad mac", mod: addNet(Network{DHCP: true, MAC: "ff:ff:ff:ff:ff:ff"}), wantErr: `networks[0].mac "ff:ff:ff:ff:ff:ff": multicast`},
		{name: "network params without filter", mod: addNet(Network{DHCP: true, FilterParams: map[string]string{"IP": "1"}}), wantErr: `networks[0]: filter.KEY= needs filter=`},
		{name: "network bad param", mod: addNet(Network{DHCP: true, Filter: "f", FilterParams: map[string]string{"b-b": "1", "a-a": "1"}}), wantErr: `networks[0].filter_params: filter parameter "a-a"`},
		{name: "security unknown", mod: func(s *Sandbox) { s.Security.Label = "none" }, wantErr: `security.label "none": unknown`},
		{name: "security static without value", mod: func(s *Sandbox) { s.Security.Label = "static" }, wantErr: `security.value "": a static label needs a value`},
		{name: "security value without static", mod: func(s *Sandbox) { s.Security = Security{Label: "dynamic", Value: "u:r:t:s0"} }, wantErr: `security.value "u:r:t:s0": only a static label`},
		{name: "security value without label", mod: func(s *Sandbox) { s.Security = Security{Value: "u:r:t:s0"} }, wantErr: `security.value "u:r:t:s0"`},
		{name: "virt type", mod: func(s *Sandbox) { s.Kernel.VirtType = "tcg" }, wantErr: `kernel.virt_type "tcg": unknown`},
		{name: "share fs", mod: func(s *Sandbox) { s.Kernel.ShareFS = "nfs" }, wantErr: `kernel.share_fs "nfs": unknown`},
		{name: "qemu memory", mod: func(s *Sandbox) { s.Driver = QEMU; s.Kernel.MemoryMiB = 63 }, wantErr: `kernel.memory_mib 63: too small for a QEMU guest (want at least 64)`},
		{name: "first problem wins", mod: func(s *Sandbox) { s.Name = "a b"; s.Driver = "" }, wantErr: `name "a b"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var s *Sandbox
			if tt.mod != nil {
				s = validSandbox()
				tt.mod(s)
			}
			err := s.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			checkErr(t, "Validate()", err, tt.wantErr)
		})
	}
}

func addMount(m ...Mount) func(*Sandbox) {
	return func(s *Sandbox) { s.Mounts = append(s.Mounts, m...) }
}

func addDisk(d ...Disk) func(*Sandbox) {
	return func(s *Sandbox) { s.Disks = append(s.Disks, d...) }
}

func addNet(n ...Network) func(*Sandbox) {
	return func(s *Sandbox) { s.Networks = append(s.Networks, n...) }
}

func TestSaveLoadRoundTrip(t *testing.T) {
	want := fullSandbox()
	if err := want.Validate(); err != nil {
		t.Fatalf("Validate() of the full sandbox = %v, want nil", err)
	}
	dir := t.TempDir()
	first := filepath.Join(dir, "first.json")
	second := filepath.Join(dir, "second.json")

	if err := want.Save(first, nil); err != nil {
		t.Fatalf("Save(%q) = %v, want nil", first, err)
	}
	got, err := Load(first)
	if err != nil {
		t.Fatalf("Load(%q) = %v, want nil", first, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Load(%q) = %+v, want %+v", first, got, want)
	}
	if err := got.Save(second, nil); err != nil {
		t.Fatalf("Save(%q) = %v, want nil", second, err)
	}
	b1, err := os.ReadFile(first)
	if err != nil {
		t.Fatal(err)
	}
	b2, err := os.ReadFile(second)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b1, b2) {
		t.Errorf("Save(Load(Save(s))) = %s, want %s", b2, b1)
	}
}

// Save must stamp the version itself, so callers cannot write a file that
// Load would refuse.
func TestSaveSetsVersion(t *testing.T) {
	s := validSandbox()
	p := filepath.Join(t.TempDir(), guest.ConfigFile)
	if err := s.Save(p, nil); err != nil {
		t.Fatalf("Save(%q) = %v, want nil", p, err)
	}
	if s.Version != 0 {
		t.Errorf("Save changed the caller's Version to %d, want 0", s.Version)
	}
	got, err := Load(p)
	if err != nil {
		t.Fatalf("Load(%q) = %v, want nil", p, err)
	}
	if got.Version != Version {
		t.Errorf("Load(%q).Version = %d, want %d", p, got.Version, Version)
	}
}

func TestLoadMissing(t *testing.T) {
	p := filepath.Join(t.TempDir(), "missing.json")
	if _, err := Load(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(%q) = %v, want an error wrapping os.ErrNotExist", p, err)
	}
}

func TestDecode(t *testing.T) {
	good, err := json.Marshal(&Sandbox{Version: Version, Name: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	if s, err := Decode(good); err != nil || s.Name != "demo" {
		t.Errorf("Decode(%s) = %+v, %v, want name demo, nil", good, s, err)
	}
	for _, tt := range []struct {
		in      string
		wantErr string
	}{
		{in: `{"version": 3, "name": "demo"}`, wantErr: "schema version 3, this build reads versions 1 to 2"},
		{in: `{"version": 0, "name": "demo"}`, wantErr: "schema version 0"},
		{in: `{"name": "demo"}`, wantErr: "schema version 0"},
		{in: `{"version": "1"}`, wantErr: "version"},
		{in: `not json`, wantErr: "invalid character"},
		{in: ``, wantErr: "unexpected end"},
	} {
		s, err := Decode([]byte(tt.in))
		if s != nil {
			t.Errorf("Decode(%q) = %+v, want nil", tt.in, s)
		}
		checkErr(t, "Decode("+tt.in+")", err, tt.wantErr)
	}
}

func TestWritable(t *testing.T) {
	ro := Mount{Type: HostBind, Target: "/tmp/ro", Source: "/src", ReadOnly: true}
	for _, tt := range []struct {
		name     string
		path     string
		mounts   []Mount
		writable bool
		want     bool
	}{
		{name: "own /tmp", path: "/tmp/x", want: true},
		{name: "own /dev/shm", path: "/dev/shm/x", want: true},
		{name: "own /run", path: "/run/x/y", want: true},
		{name: "read-only root", path: "/etc/x", want: false},
		{name: "writable root", path: "/etc/x", writable: true, want: true},
		{name: "not /tmp itself", path: "/tmpx/y", want: false},
		{name: "ram mount", path: "/mem/x", mounts: []Mount{{Type: RAM, Target: "/mem", SizeKiB: 1}}, want: true},
		{name: "guest-bind", path: "/g/x", mounts: []Mount{{Type: GuestBind, Target: "/g", Source: "/etc"}}, want: false},
		// The innermost mount decides, a user's over the sandbox's own.
		{name: "read-only mount in /tmp", path: "/tmp/ro/x", mounts: []Mount{ro}, want: false},
		{name: "beside it", path: "/tmp/rox", mounts: []Mount{ro}, want: true},
		{name: "read-only mount over /tmp", path: "/tmp/x", mounts: []Mount{{Type: HostBind, Target: "/tmp", Source: "/s", ReadOnly: true}}, want: false},
		{name: "read-only mount, writable root", path: "/tmp/ro/x", mounts: []Mount{ro}, writable: true, want: false},
		{name: "writable mount in a read-only one", path: "/tmp/ro/w/x", mounts: []Mount{ro, {Type: HostBind, Target: "/tmp/ro/w", Source: "/w"}}, want: true},
	} {
		s := validSandbox()
		s.Mounts, s.WritableRoot = tt.mounts, tt.writable
		if got := s.Writable(tt.path); got != tt.want {
			t.Errorf("%s: Writable(%q) = %v, want %v", tt.name, tt.path, got, tt.want)
		}
	}
}

// TestRunRoundTrip: what the launcher resolved reaches the init beside the
// user's config, and the launcher's own Load leaves it out.
func TestRunRoundTrip(t *testing.T) {
	s := fullSandbox()
	res := &guest.Resolved{
		IDMap:       &guest.IDMap{UIDs: []guest.IDRange{{Inside: 0, Outside: 100000, Count: 65536}}, GIDs: []guest.IDRange{{Inside: 0, Outside: 100000, Count: 65536}}},
		MountFS:     map[int]string{1: "ext4"},
		DiskDevices: map[int]string{0: "/dev/loop7"},
	}
	p := filepath.Join(t.TempDir(), guest.ConfigFile)
	if err := s.Save(p, res); err != nil {
		t.Fatal(err)
	}
	r, err := LoadRun(p)
	if err != nil {
		t.Fatalf("LoadRun(%q) = %v", p, err)
	}
	want := *s
	want.Version = Version
	if !reflect.DeepEqual(r.Sandbox, want) || !reflect.DeepEqual(r.Resolved, *res) {
		t.Errorf("LoadRun(%q) = %+v, want %+v and %+v", p, r, want, *res)
	}
	got, err := Load(p)
	if err != nil || !reflect.DeepEqual(*got, want) {
		t.Errorf("Load(%q) = %+v, %v, want the user's config %+v", p, got, err, want)
	}
}

// TestLoadVersions: the launcher reads the user's config of a version 1
// file (a service made by an older build), the init only this version's.
func TestLoadVersions(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		file         string
		wantLoad     bool
		wantRunError string
	}{
		{file: `{"version": 1, "name": "old", "identity": {"uid": 0, "gid": 0, "idmap": {"uids": [], "gids": []}}}`, wantLoad: true, wantRunError: "schema version 1, this build reads version 2"},
		{file: `{"version": 2, "name": "new", "resolved": {"mount_fs": {"0": "xfs"}}}`, wantLoad: true},
		{file: `{"version": 3, "name": "newer"}`, wantRunError: "schema version 3"},
	} {
		p := filepath.Join(dir, "sandbox.json")
		if err := os.WriteFile(p, []byte(tt.file), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(p); (err == nil) != tt.wantLoad {
			t.Errorf("Load(%s) = %v, want success %v", tt.file, err, tt.wantLoad)
		}
		r, err := LoadRun(p)
		if tt.wantRunError == "" {
			if err != nil || r.Resolved.MountFS[0] != "xfs" {
				t.Errorf("LoadRun(%s) = %+v, %v, want mount 0 of xfs", tt.file, r, err)
			}
			continue
		}
		checkErr(t, "LoadRun("+tt.file+")", err, tt.wantRunError)
	}
}
