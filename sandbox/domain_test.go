package sandbox

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"libvirt.org/go/libvirtxml"

	"github.com/virt-sandbox/virt-sandbox/config"
	"github.com/virt-sandbox/virt-sandbox/config/guest"
)

// roundTrip marshals d and parses the XML back, so the tests check what
// libvirt is given rather than the Go structure that describes it.
func roundTrip(t *testing.T, d *libvirtxml.Domain) *libvirtxml.Domain {
	t.Helper()
	x, err := d.Marshal()
	if err != nil {
		t.Fatalf("Domain.Marshal() = %v", err)
	}
	var got libvirtxml.Domain
	if err := got.Unmarshal(x); err != nil {
		t.Fatalf("Domain.Unmarshal(%s) = %v", x, err)
	}
	return &got
}

func testConfig(drv config.Driver, uri string) *config.Sandbox {
	return &config.Sandbox{
		Version: config.Version,
		Name:    "sandbox-test",
		UUID:    "0b7e3a8c-5d1f-4e2a-9c3b-7f6e5d4c3b2a",
		Driver:  drv,
		URI:     uri,
		Command: config.Command{Argv: []string{"/bin/true"}},
	}
}

// fsDesc is the part of a filesystem that matters to the sandbox, in a form
// that compares and prints well.
type fsDesc struct {
	Mount, File, RAM, Target, Driver string
	// MultiDevs is how a 9p share keeps files of different host
	// filesystems apart.
	MultiDevs string
	ReadOnly  bool
}

func describeFS(fs []libvirtxml.DomainFilesystem) []fsDesc {
	var out []fsDesc
	for _, f := range fs {
		var d fsDesc
		if f.Source != nil && f.Source.Mount != nil {
			d.Mount = f.Source.Mount.Dir
		}
		if f.Source != nil && f.Source.File != nil {
			d.File = f.Source.File.File
		}
		if f.Source != nil && f.Source.RAM != nil {
			d.RAM = fmt.Sprintf("%d %s", f.Source.RAM.Usage, f.Source.RAM.Units)
		}
		if f.Target != nil {
			d.Target = f.Target.Dir
		}
		if f.Driver != nil {
			d.Driver = f.Driver.Type
		}
		d.MultiDevs = f.MultiDevs
		d.ReadOnly = f.ReadOnly != nil
		out = append(out, d)
	}
	return out
}

func TestLXCDescribe(t *testing.T) {
	for _, tt := range []struct {
		name   string
		change func(*config.Sandbox, *plan)
		// wantFS are the filesystems after the root and /run, which
		// always come first: libvirt mounts in order, and /run must
		// come before the binds inside it, or it hides them.
		wantFS       []fsDesc
		wantHostdevs []string
		wantInitEnv  bool
	}{
		{
			name:   "host root",
			change: func(*config.Sandbox, *plan) {},
			wantFS: []fsDesc{{Mount: "/state", Target: guest.Dir, ReadOnly: true}, {Mount: "/init", Target: guest.Init, ReadOnly: true}},
		},
		{
			// A custom root is shared on a stage; libvirt gets the
			// skeleton prepare made.
			name: "own root, mounts",
			change: func(c *config.Sandbox, p *plan) {
				c.Root, p.root = "/srv/root", "/state/skeleton"
				c.Mounts = []config.Mount{{Type: config.HostBind, Source: "/data", Target: "/data", ReadOnly: true}}
			},
			wantFS: []fsDesc{
				{Mount: "/state", Target: guest.Dir, ReadOnly: true}, {Mount: "/init", Target: guest.Init, ReadOnly: true},
				{Mount: "/srv/root", Target: guest.Root, ReadOnly: true}, {Mount: "/data", Target: guest.MountStage(0), ReadOnly: true},
			},
		},
		{
			name: "root image, service",
			change: func(c *config.Sandbox, p *plan) {
				c.RootImage, p.rootImage, p.root = "/images/x.squashfs", "/images/x.squashfs", "/state/skeleton"
				c.Service, p.logDir = &config.Service{}, "/logs"
			},
			wantFS: []fsDesc{
				{Mount: "/state", Target: guest.Dir, ReadOnly: true}, {Mount: "/init", Target: guest.Init, ReadOnly: true},
				{File: "/images/x.squashfs", Driver: "loop", Target: guest.Root, ReadOnly: true}, {Mount: "/logs", Target: guest.Log},
			},
		},
		{
			name: "disks",
			change: func(c *config.Sandbox, p *plan) {
				c.Disks = []config.Disk{{Tag: "a", Source: "/a.img", Format: "raw"}, {Tag: "b", Source: "/b.img", Format: "raw"}}
				p.loopDevices = []string{"/dev/loop3", "/dev/loop7"}
			},
			wantFS:       []fsDesc{{Mount: "/state", Target: guest.Dir, ReadOnly: true}, {Mount: "/init", Target: guest.Init, ReadOnly: true}},
			wantHostdevs: []string{"/dev/loop3", "/dev/loop7"},
		},
		{
			// The run's files come on the channel: no config share, and
			// the init is a volume.
			name: "remote",
			change: func(c *config.Sandbox, p *plan) {
				c.URI, p.remote, p.stateDir, p.init = "lxc+ssh://host/", true, "", "/pool/init-123"
			},
			wantFS:      []fsDesc{{Mount: "/pool/init-123", Target: guest.Init, ReadOnly: true}},
			wantInitEnv: true,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(config.LXC, "lxc:///")
			p := &plan{stateDir: "/state", init: "/init", root: "/", memoryMiB: 300}
			tt.change(cfg, p)
			checkLXCDomain(t, cfg, p, roundTrip(t, lxcDriver{}.describe(cfg, p)), tt.wantFS, tt.wantHostdevs, tt.wantInitEnv)
		})
	}
}

// checkLXCDomain checks the container d that describe made of cfg and p.
func checkLXCDomain(t *testing.T, cfg *config.Sandbox, p *plan, d *libvirtxml.Domain, wantFS []fsDesc, wantHostdevs []string, wantInitEnv bool) {
	t.Helper()

	if d.Type != "lxc" || d.Name != cfg.Name || d.UUID != cfg.UUID {
		t.Errorf("describe() = type %q, name %q, uuid %q, want lxc, %q, %q", d.Type, d.Name, d.UUID, cfg.Name, cfg.UUID)
	}
	if d.OS == nil || d.OS.Type == nil || d.OS.Type.Type != "exe" || d.OS.Init != guest.Init || !reflect.DeepEqual(d.OS.InitArgs, []string{"lxc"}) {
		t.Errorf("describe().OS = %+v, want type exe, init %s, initarg lxc", d.OS, guest.Init)
	}
	wantEnv := []libvirtxml.DomainOSInitEnv(nil)
	if wantInitEnv {
		wantEnv = []libvirtxml.DomainOSInitEnv{{Name: guest.FilesEnv, Value: guest.FilesOnChannel}}
	}
	if !reflect.DeepEqual(d.OS.InitEnv, wantEnv) {
		t.Errorf("describe() initenv = %+v, want %+v", d.OS.InitEnv, wantEnv)
	}
	// Without privnet the container shares the host's network.
	if d.Features == nil || d.Features.PrivNet == nil {
		t.Errorf("describe().Features = %+v, want privnet", d.Features)
	}
	want := append([]fsDesc{{Mount: p.root, Target: "/", ReadOnly: true}, {RAM: "64 MiB", Target: "/run"}}, wantFS...)
	if got := describeFS(d.Devices.Filesystems); !reflect.DeepEqual(got, want) {
		t.Errorf("describe() filesystems = %+v, want %+v", got, want)
	}
	for i, f := range d.Devices.Filesystems {
		if f.AccessMode != "passthrough" {
			t.Errorf("describe() filesystem %d accessmode = %q, want passthrough", i, f.AccessMode)
		}
	}
	var hostdevs []string
	for _, h := range d.Devices.Hostdevs {
		hostdevs = append(hostdevs, h.CapsStorage.Source.Block)
	}
	if !slices.Equal(hostdevs, wantHostdevs) {
		t.Errorf("describe() hostdevs = %q, want %q", hostdevs, wantHostdevs)
	}
	// The first console is the log, then one per app channel.
	if n, want := len(d.Devices.Consoles), 1+guest.AppChannels(cfg.Service != nil); n != want {
		t.Fatalf("describe() has %d consoles, want %d", n, want)
	}
	for i, c := range d.Devices.Consoles {
		if c.Source == nil || c.Source.Pty == nil {
			t.Errorf("describe() console %d = %+v, want a pty", i, c)
		}
	}
	if d.OnPoweroff != "destroy" || d.OnReboot != "destroy" || d.OnCrash != "destroy" {
		t.Errorf("describe() on_poweroff/reboot/crash = %q/%q/%q, want destroy for all", d.OnPoweroff, d.OnReboot, d.OnCrash)
	}
	if d.Memory == nil || d.Memory.Value != 300 || d.Memory.Unit != "MiB" {
		t.Errorf("describe().Memory = %+v, want the plan's 300 MiB", d.Memory)
	}
}

func TestInterfaces(t *testing.T) {
	cfg := testConfig(config.LXC, "lxc:///")
	cfg.Networks = []config.Network{
		{Source: "default", Filter: "clean-traffic", FilterParams: map[string]string{"IP": "10.0.0.2", "CTRL_IP_LEARNING": "none"}},
		{User: true},
	}
	p := &plan{interfaces: []plannedInterface{{network: "default", mac: "52:54:00:00:00:01"}, {mac: "52:54:00:00:00:02"}}}
	for _, model := range []string{"", "virtio"} {
		ifaces := describeInterfaces(cfg, p, model)
		if len(ifaces) != 2 {
			t.Fatalf("describeInterfaces(%q) = %d interfaces, want 2", model, len(ifaces))
		}
		if s := ifaces[0].Source; s.Network == nil || s.Network.Network != "default" || ifaces[0].MAC.Address != "52:54:00:00:00:01" {
			t.Errorf("describeInterfaces(%q)[0] = source %+v, mac %+v, want network default, the planned MAC", model, s, ifaces[0].MAC)
		}
		if s := ifaces[1].Source; s.User == nil || ifaces[1].MAC.Address != "52:54:00:00:00:02" {
			t.Errorf("describeInterfaces(%q)[1] = source %+v, mac %+v, want user-mode, the planned MAC", model, s, ifaces[1].MAC)
		}
		// Sorted, so the same config makes the same XML.
		ref := ifaces[0].FilterRef
		if ref == nil || ref.Filter != "clean-traffic" || len(ref.Parameters) != 2 || ref.Parameters[0].Name != "CTRL_IP_LEARNING" || ref.Parameters[1].Name != "IP" {
			t.Errorf("describeInterfaces(%q)[0] filterref = %+v, want clean-traffic, parameters by name", model, ref)
		}
		if model == "" && (ifaces[1].Target == nil || ifaces[1].Target.Dev != "vsb0b7e3a8c1") {
			t.Errorf("describeInterfaces(LXC)[1] target = %+v, want vsb0b7e3a8c1: the UUID's start and the index", ifaces[1].Target)
		}
		if model != "" && (ifaces[0].Model == nil || ifaces[0].Model.Type != model || ifaces[0].Target != nil) {
			t.Errorf("describeInterfaces(%q)[0] = model %+v, target %+v, want model %s and no target", model, ifaces[0].Model, ifaces[0].Target, model)
		}
	}
}

func TestSecLabel(t *testing.T) {
	for _, tt := range []struct {
		label, value string
		want         []libvirtxml.DomainSecLabel
	}{
		// Dynamic is libvirt's own default: nothing to say.
		{label: "", want: nil},
		{label: "dynamic", want: nil},
		{label: "inherit", want: []libvirtxml.DomainSecLabel{{Type: "none"}}},
		{label: "static", value: "system_u:system_r:svirt_t:s0:c412,c355", want: []libvirtxml.DomainSecLabel{{Type: "static", Label: "system_u:system_r:svirt_t:s0:c412,c355", Relabel: "no"}}},
	} {
		cfg := testConfig(config.LXC, "lxc:///")
		cfg.Security = config.Security{Label: tt.label, Value: tt.value}
		if got := baseDomain(cfg, "lxc", 64).SecLabel; !reflect.DeepEqual(got, tt.want) {
			t.Errorf("baseDomain(label %q).SecLabel = %+v, want %+v", tt.label, got, tt.want)
		}
		// The driver must keep it and it must survive the XML.
		d := lxcDriver{}.describe(cfg, &plan{stateDir: "/state", init: "/init", root: "/"})
		if got := roundTrip(t, d).SecLabel; !reflect.DeepEqual(got, tt.want) {
			t.Errorf("lxcDriver.describe(label %q) seclabel = %+v, want %+v", tt.label, got, tt.want)
		}
	}
}

func TestQEMUDescribe(t *testing.T) {
	dac := libvirtxml.DomainSecLabel{Type: "static", Model: "dac", Relabel: "yes", Label: "+1001:+1002"}
	static := libvirtxml.DomainSecLabel{Type: "static", Label: "system_u:system_r:svirt_t:s0:c1,c2", Relabel: "no"}
	ninep := func(src, tag string, ro bool) fsDesc {
		return fsDesc{Mount: src, Target: tag, Driver: "path", MultiDevs: "remap", ReadOnly: ro}
	}
	for _, tt := range []struct {
		name    string
		change  func(*config.Sandbox, *plan)
		wantFS  []fsDesc
		wantSec []libvirtxml.DomainSecLabel
		// wantArgs are in the command line; wantSerial is "file", "pty",
		// "pty+log" or "null".
		wantArgs   []string
		wantSerial string
	}{
		{name: "plain", change: func(*config.Sandbox, *plan) {},
			wantFS: []fsDesc{ninep("/", guest.RootTag, true), ninep("/state", guest.ConfigTag, true)}, wantArgs: []string{"quiet"}, wantSerial: "file"},
		{name: "debug", change: func(c *config.Sandbox, _ *plan) { c.Debug = true },
			wantFS: []fsDesc{ninep("/", guest.RootTag, true), ninep("/state", guest.ConfigTag, true)}, wantArgs: []string{guest.DebugEnv + "=1"}, wantSerial: "pty+log"},
		{name: "kvm, own root, caller's cmdline", change: func(c *config.Sandbox, p *plan) {
			p.virtType, c.Root, c.Kernel.Cmdline = "kvm", "/srv/root", "systemd.log_level=debug foo=bar"
		}, wantFS: []fsDesc{ninep("/srv/root", guest.RootTag, true), ninep("/state", guest.ConfigTag, true)}, wantArgs: []string{"systemd.log_level=debug"}, wantSerial: "file"},
		// QEMU of a local system instance runs as the caller, so the
		// shares are read with the caller's rights.
		{name: "run as the caller", change: func(c *config.Sandbox, p *plan) { p.runAs = &owner{uid: 1001, gid: 1002} },
			wantFS: []fsDesc{ninep("/", guest.RootTag, true), ninep("/state", guest.ConfigTag, true)}, wantSec: []libvirtxml.DomainSecLabel{dac}, wantSerial: "file"},
		{name: "static and the caller", change: func(c *config.Sandbox, p *plan) {
			p.runAs, c.Security = &owner{uid: 1001, gid: 1002}, config.Security{Label: "static", Value: static.Label}
		}, wantFS: []fsDesc{ninep("/", guest.RootTag, true), ninep("/state", guest.ConfigTag, true)}, wantSec: []libvirtxml.DomainSecLabel{static, dac}, wantSerial: "file"},
		{name: "inherit", change: func(c *config.Sandbox, p *plan) { c.Security = config.Security{Label: "inherit"} },
			wantFS: []fsDesc{ninep("/", guest.RootTag, true), ninep("/state", guest.ConfigTag, true)}, wantSec: []libvirtxml.DomainSecLabel{{Type: "none"}}, wantSerial: "file"},
		{name: "mounts, service", change: func(c *config.Sandbox, p *plan) {
			c.Mounts = []config.Mount{{Type: config.HostBind, Source: "/data", Target: "/data"}}
			c.Service, p.logDir = &config.Service{}, "/logs"
		}, wantFS: []fsDesc{ninep("/", guest.RootTag, true), ninep("/state", guest.ConfigTag, true), ninep("/data", guest.MountTag(0), false), ninep("/logs", guest.LogTag, false)}, wantSerial: "pty+log"},
		// A remote host's files are its own: no config share, the files
		// come on the channel, and no console log of ours.
		{name: "remote", change: func(c *config.Sandbox, p *plan) { c.URI, p.remote, p.stateDir = "qemu+ssh://host/system", true, "" },
			wantFS: []fsDesc{ninep("/", guest.RootTag, true)}, wantArgs: []string{guest.FilesEnv + "=" + guest.FilesOnChannel}, wantSerial: "null"},
		{name: "root image", change: func(c *config.Sandbox, p *plan) {
			c.RootImage, p.rootImage = "/images/x.squashfs", "/images/x.squashfs"
		},
			wantFS: []fsDesc{ninep("/state", guest.ConfigTag, true)}, wantArgs: []string{guest.RootFSEnv + "=" + guest.RootImageFS}, wantSerial: "file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(config.QEMU, "qemu:///system")
			p := &plan{stateDir: "/state", memoryMiB: 700, kernel: "/cache/kernel/k", initrd: "/cache/initrd/i", virtType: "qemu", shares: shares{fs: guest.NinePShares}}
			tt.change(cfg, p)
			checkQEMUDomain(t, cfg, p, roundTrip(t, qemuDriver{}.describe(cfg, p)), tt.wantFS, tt.wantSec, tt.wantArgs, tt.wantSerial)
		})
	}
}

// checkQEMUDomain checks the machine d that describe made of cfg and p.
func checkQEMUDomain(t *testing.T, cfg *config.Sandbox, p *plan, d *libvirtxml.Domain, wantFS []fsDesc, wantSec []libvirtxml.DomainSecLabel, wantArgs []string, wantSerial string) {
	t.Helper()

	if d.Type != p.virtType || d.Name != cfg.Name || d.UUID != cfg.UUID {
		t.Errorf("describe() = type %q, name %q, uuid %q, want %s, %q, %q", d.Type, d.Name, d.UUID, p.virtType, cfg.Name, cfg.UUID)
	}
	if d.OS == nil || d.OS.Type == nil || d.OS.Type.Type != "hvm" || d.OS.Kernel != p.kernel || d.OS.Initrd != p.initrd {
		t.Fatalf("describe().OS = %+v, want hvm booting the plan's kernel and initrd", d.OS)
	}
	if d.Features == nil || d.Features.ACPI == nil {
		t.Errorf("describe().Features = %+v, want acpi", d.Features)
	}
	if wantCPU := p.virtType == "kvm"; (d.CPU != nil && d.CPU.Mode == "host-passthrough") != wantCPU {
		t.Errorf("describe().CPU = %+v, want host-passthrough: %v", d.CPU, wantCPU)
	}
	args := strings.Fields(d.OS.Cmdline)
	if want := []string{"console=ttyS0", "panic=-1", "rdinit=/init", guest.SharesEnv + "=" + guest.NinePShares}; !slices.Equal(args[:len(want)], want) {
		t.Errorf("describe() cmdline = %q, want it to start with %q", d.OS.Cmdline, want)
	}
	for _, a := range wantArgs {
		if !slices.Contains(args, a) {
			t.Errorf("describe() cmdline = %q, want %s in it", d.OS.Cmdline, a)
		}
	}
	if slices.Contains(args, "quiet") == cfg.Debug {
		t.Errorf("describe(debug %v) cmdline = %q, want quiet: %v", cfg.Debug, d.OS.Cmdline, !cfg.Debug)
	}
	// Last, so the caller's arguments win over ours.
	if cfg.Kernel.Cmdline != "" && !strings.HasSuffix(d.OS.Cmdline, " "+cfg.Kernel.Cmdline) {
		t.Errorf("describe() cmdline = %q, want it to end with %q", d.OS.Cmdline, cfg.Kernel.Cmdline)
	}
	if got := describeFS(d.Devices.Filesystems); !reflect.DeepEqual(got, wantFS) {
		t.Errorf("describe() filesystems = %+v, want %+v", got, wantFS)
	}
	if got := serialKind(d.Devices.Serials, "/state/"+consoleLog); got != wantSerial {
		t.Errorf("describe() serial = %+v: %s, want %s", d.Devices.Serials, got, wantSerial)
	}
	// OpenChannel only works on a UNIX socket. A local sandbox that is
	// not a service has the data ports too, with a terminal or not.
	wantChans := guest.AppChannels(cfg.Service != nil)
	if hasDataPorts(cfg) {
		wantChans += len(guest.DataPorts)
	}
	if c := d.Devices.Channels; len(c) != wantChans || c[0].Source == nil || c[0].Source.UNIX == nil || c[0].Target.VirtIO.Name != guest.AppChannel {
		t.Errorf("describe() channels = %+v, want %d virtio channels on UNIX sockets, %s first", c, wantChans, guest.AppChannel)
	}
	for _, c := range d.Devices.Channels {
		if c.Source == nil || c.Source.UNIX == nil || c.Target == nil || c.Target.VirtIO == nil {
			t.Errorf("describe() channel = %+v, want a virtio channel on a UNIX socket", c)
		}
	}
	if b := d.Devices.MemBalloon; b == nil || b.Model != "none" {
		t.Errorf("describe() memballoon = %+v, want model none", b)
	}
	if d.Memory == nil || d.Memory.Value != 700 || d.Memory.Unit != "MiB" {
		t.Errorf("describe().Memory = %+v, want the plan's 700 MiB", d.Memory)
	}
	if !reflect.DeepEqual(d.SecLabel, wantSec) {
		t.Errorf("describe(%+v).SecLabel = %+v, want %+v", cfg.Security, d.SecLabel, wantSec)
	}
}

// serialKind tells a console's kind: a file (logPath), a pty with a log
// (logPath), a pty alone, or nothing.
func serialKind(s []libvirtxml.DomainSerial, logPath string) string {
	switch {
	case len(s) != 1 || s[0].Source == nil:
		return fmt.Sprintf("%d serials", len(s))
	case s[0].Source.File != nil && s[0].Source.File.Path == logPath:
		return "file"
	case s[0].Source.Pty != nil && s[0].Log != nil && s[0].Log.File == logPath:
		return "pty+log"
	case s[0].Source.Pty != nil && s[0].Log == nil:
		return "pty"
	case s[0].Source.Null != nil:
		return "null"
	}
	return "other"
}

func TestQEMUDescribeDisks(t *testing.T) {
	cfg := testConfig(config.QEMU, "qemu:///system")
	cfg.RootImage = "/images/x.squashfs"
	cfg.Mounts = []config.Mount{{Type: config.HostImage, Source: "/m.qcow2", Format: "qcow2", Target: "/m", ReadOnly: true}}
	cfg.Disks = []config.Disk{{Tag: "data", Source: "/d.img", Format: "raw"}}
	p := &plan{stateDir: "/state", rootImage: "/pool/rootfs-1", virtType: "qemu", shares: shares{fs: guest.NinePShares}}
	d := roundTrip(t, qemuDriver{}.describe(cfg, p))
	type disk struct {
		src, format, dev, serial string
		ro                       bool
	}
	var got []disk
	for _, k := range d.Devices.Disks {
		got = append(got, disk{k.Source.File.File, k.Driver.Type, k.Target.Dev, k.Serial, k.ReadOnly != nil})
	}
	want := []disk{
		{"/pool/rootfs-1", "raw", "vda", guest.RootTag, true},
		{"/m.qcow2", "qcow2", "vdb", guest.MountTag(0), true},
		{"/d.img", "raw", "vdc", "data", false},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("describe() disks = %+v, want %+v", got, want)
	}
}

func TestQEMUDescribeVirtiofs(t *testing.T) {
	cfg := testConfig(config.QEMU, "qemu:///system")
	p := &plan{stateDir: "/state", virtType: "qemu", shares: shares{fs: guest.VirtiofsShares, readOnlyDaemon: "/ro-virtiofsd"}}
	d := roundTrip(t, qemuDriver{}.describe(cfg, p))
	if m := d.MemoryBacking; m == nil || m.MemoryAccess == nil || m.MemoryAccess.Mode != "shared" {
		t.Errorf("describe(virtiofs).MemoryBacking = %+v, want shared memory for virtiofsd", m)
	}
	// The config share stays 9p: a virtiofsd costs boot time.
	want := []fsDesc{{Mount: "/", Target: guest.RootTag, Driver: "virtiofs"}, {Mount: "/state", Target: guest.ConfigTag, Driver: "path", MultiDevs: "remap", ReadOnly: true}}
	if got := describeFS(d.Devices.Filesystems); !reflect.DeepEqual(got, want) {
		t.Errorf("describe(virtiofs) filesystems = %+v, want %+v", got, want)
	}
	if !strings.Contains(d.OS.Cmdline, guest.SharesEnv+"="+guest.VirtiofsShares) {
		t.Errorf("describe(virtiofs) cmdline = %q, want %s=%s", d.OS.Cmdline, guest.SharesEnv, guest.VirtiofsShares)
	}
}

func TestIsEmbedded(t *testing.T) {
	for _, tt := range []struct {
		uri  string
		want bool
	}{
		{"qemu:///embed?root=/tmp/x", true},
		{"qemu+unix:///embed?root=/tmp/x", true},
		{"qemu:///system", false},
		{"qemu:///session", false},
		{"qemu+ssh://host/embed", false},
		{"lxc:///", false},
	} {
		if got := isEmbedded(tt.uri); got != tt.want {
			t.Errorf("isEmbedded(%q) = %v, want %v", tt.uri, got, tt.want)
		}
	}
}

func TestPrepareEmbedRoot(t *testing.T) {
	// A root that does not exist yet: the driver makes it, we make etc.
	root := filepath.Join(t.TempDir(), "embed")
	conf := filepath.Join(root, "etc", "qemu.conf")
	if err := prepareEmbedRoot("qemu:///embed?root=" + root); err != nil {
		t.Fatalf("prepareEmbedRoot(root=%s) = %v", root, err)
	}
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatalf("prepareEmbedRoot(root=%s) wrote no %s: %v", root, conf, err)
	}
	if !strings.Contains(string(b), "stdio_handler = \"file\"\n") {
		t.Errorf("prepareEmbedRoot(root=%s) wrote %q, want stdio_handler = \"file\"", root, b)
	}
	// The file is the user's once it exists: theirs to change.
	mine := []byte("stdio_handler = \"logd\"\n")
	if err := os.WriteFile(conf, mine, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := prepareEmbedRoot("qemu:///embed?root=" + root); err != nil {
		t.Fatalf("prepareEmbedRoot(root=%s) again = %v", root, err)
	}
	if b, _ := os.ReadFile(conf); !bytes.Equal(b, mine) {
		t.Errorf("prepareEmbedRoot(root=%s) over an existing qemu.conf left %q, want %q untouched", root, b, mine)
	}

	for _, uri := range []string{"qemu:///embed", "qemu:///embed?root=", "qemu:///embed?other=/x"} {
		if err := prepareEmbedRoot(uri); !errors.Is(err, config.ErrInvalid) || !strings.Contains(fmt.Sprint(err), "root=") {
			t.Errorf("prepareEmbedRoot(%q) = %v, want an error wrapping config.ErrInvalid that asks for root=", uri, err)
		}
	}
}
