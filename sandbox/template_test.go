package sandbox

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"libvirt.org/go/libvirtxml"

	"github.com/virt-sandbox/virt-sandbox/config"
	"github.com/virt-sandbox/virt-sandbox/config/guest"
)

// runDomain is a QEMU sandbox's machine as describe makes it for a run
// with state directory stateDir and root root (template: a template's).
func runDomain(name, uuid, stateDir, root string, memMiB uint64, template bool) *libvirtxml.Domain {
	cfg := testConfig(config.QEMU, "qemu:///session")
	cfg.Name, cfg.UUID, cfg.Root = name, uuid, root
	p := &plan{stateDir: stateDir, memoryMiB: memMiB, kernel: "/k", initrd: "/i", virtType: "qemu", shares: shares{fs: guest.NinePShares}, template: template}
	return qemuDriver{}.describe(cfg, p)
}

func TestTemplateKey(t *testing.T) {
	key := func(d *libvirtxml.Domain, versions string) string {
		t.Helper()
		k, err := templateKey(d, versions)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	base := key(runDomain("sandbox-a", "11111111-1111-4111-8111-111111111111", "/run/virt-sandbox/sandbox-a", "", 512, true), "v1")
	for _, c := range []struct {
		name string
		d    *libvirtxml.Domain
		vers string
		same bool
	}{
		{"another run: name, UUID, state directory, root", runDomain("sandbox-b", "22222222-2222-4222-8222-222222222222", "/run/virt-sandbox/sandbox-b", "/srv/root", 512, true), "v1", true},
		{"more memory", runDomain("sandbox-a", "11111111-1111-4111-8111-111111111111", "/run/virt-sandbox/sandbox-a", "", 1024, true), "v1", false},
		{"another QEMU", runDomain("sandbox-a", "11111111-1111-4111-8111-111111111111", "/run/virt-sandbox/sandbox-a", "", 512, true), "v2", false},
	} {
		if got := key(c.d, c.vers) == base; got != c.same {
			t.Errorf("%s: same key = %v, want %v", c.name, got, c.same)
		}
	}
	shared := runDomain("sandbox-a", "11111111-1111-4111-8111-111111111111", "/run/virt-sandbox/sandbox-a", "", 512, true)
	shared.Devices.Filesystems = append(shared.Devices.Filesystems, writableShare("/data", guest.MountTag(0), false))
	if key(shared, "v1") == base {
		t.Error("a machine with one more share has the same key")
	}
	// The data ports are guest-visible: a machine without them is
	// another.
	noPorts := runDomain("sandbox-a", "11111111-1111-4111-8111-111111111111", "/run/virt-sandbox/sandbox-a", "", 512, true)
	noPorts.Devices.Channels = slices.DeleteFunc(noPorts.Devices.Channels, func(c libvirtxml.DomainChannel) bool {
		return slices.Contains(guest.DataPorts[:], c.Target.VirtIO.Name)
	})
	if len(noPorts.Devices.Channels) != 2 {
		t.Fatalf("the template without data ports has channels %+v, want the app channel and the run channel", noPorts.Devices.Channels)
	}
	if key(noPorts, "v1") == base {
		t.Error("a machine without data ports has the same key")
	}
}

func TestTemplateDescribe(t *testing.T) {
	d := runDomain("sandbox-a", "11111111-1111-4111-8111-111111111111", "/run/s", "", 512, false)
	tpl := runDomain("sandbox-a", "11111111-1111-4111-8111-111111111111", "/run/s", "", 512, true)
	if !strings.HasSuffix(tpl.OS.Cmdline, " "+templateTag) || strings.Contains(d.OS.Cmdline, templateTag) {
		t.Errorf("template cmdline %q, run's %q: want the tag on the template's only", tpl.OS.Cmdline, d.OS.Cmdline)
	}
	if strings.TrimSuffix(tpl.OS.Cmdline, " "+templateTag) != d.OS.Cmdline {
		t.Errorf("template cmdline %q, run's %q: want the run's and the tag", tpl.OS.Cmdline, d.OS.Cmdline)
	}
	chans := tpl.Devices.Channels
	if len(chans) != len(d.Devices.Channels)+1 {
		t.Fatalf("template has %d channels, want the run's %d and the run channel", len(chans), len(d.Devices.Channels))
	}
	last := chans[len(chans)-1]
	if last.Target.VirtIO.Name != guest.RunChannel || last.Source.UNIX.Path != "/run/s/run.sock" {
		t.Errorf("run channel %s on %s", last.Target.VirtIO.Name, last.Source.UNIX.Path)
	}
}

func TestSlotIdentity(t *testing.T) {
	uuidRE := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	for i := range maxTemplateSlots {
		name, uuid := slotIdentity("0123456789abcdef", i)
		if !uuidRE.MatchString(uuid) {
			t.Errorf("slot %d: UUID %q is not a version 4 UUID", i, uuid)
		}
		if seen[name] || seen[uuid] {
			t.Errorf("slot %d: %s %s repeats another slot's", i, name, uuid)
		}
		seen[name], seen[uuid] = true, true
		if n2, u2 := slotIdentity("0123456789abcdef", i); n2 != name || u2 != uuid {
			t.Errorf("slot %d: identity changes between calls", i)
		}
		if got, want := slotLock("/c/template", name), "/c/template/0123456789abcdef/slot-"+string(rune('0'+i))+".lock"; got != want {
			t.Errorf("slotLock(%s) = %s, want %s", name, got, want)
		}
	}
}

func TestTemplateRefusal(t *testing.T) {
	for _, c := range []struct {
		name   string
		change func(*config.Sandbox)
		want   string
	}{
		{"plain", func(*config.Sandbox) {}, ""},
		{"host-bind mounts", func(c *config.Sandbox) {
			c.Mounts = []config.Mount{{Type: config.HostBind, Source: "/d", Target: "/d"}}
		}, ""},
		{"--cold-boot", func(c *config.Sandbox) { c.Kernel.ColdBoot = true }, "--cold-boot"},
		{"LXC", func(c *config.Sandbox) { c.Driver = config.LXC }, "not QEMU"},
		{"remote", func(c *config.Sandbox) { c.URI = "qemu+ssh://h/system" }, "not a local libvirtd"},
		{"embedded", func(c *config.Sandbox) { c.URI = "qemu:///embed?root=/r" }, "not a local libvirtd"},
		{"service", func(c *config.Sandbox) { c.Service = &config.Service{} }, "a service"},
		{"disk", func(c *config.Sandbox) { c.Disks = []config.Disk{{Tag: "d", Source: "/d.img"}} }, "disks or networks"},
		{"network", func(c *config.Sandbox) { c.Networks = []config.Network{{DHCP: true}} }, "disks or networks"},
		{"image mount", func(c *config.Sandbox) {
			c.Mounts = []config.Mount{{Type: config.HostImage, Source: "/i.img", Target: "/i"}}
		}, "an image mount"},
	} {
		cfg := testConfig(config.QEMU, "qemu:///system")
		c.change(cfg)
		if got := templateRefusal(cfg); got != c.want {
			t.Errorf("%s: templateRefusal = %q, want %q", c.name, got, c.want)
		}
	}
}

func TestUnsavable(t *testing.T) {
	d := runDomain("sandbox-a", "11111111-1111-4111-8111-111111111111", "/run/s", "", 512, false)
	if why := unsavable(d); why != "" {
		t.Errorf("9p shares: unsavable = %q, want none", why)
	}
	d.Devices.Filesystems[0].Driver = &libvirtxml.DomainFilesystemDriver{Type: "virtiofs"}
	if unsavable(d) == "" {
		t.Error("a virtiofs share: unsavable says nothing")
	}
}
