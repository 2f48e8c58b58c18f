package sandbox

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/virt-sandbox/virt-sandbox/config"
	"github.com/virt-sandbox/virt-sandbox/config/guest"
)

func TestShareFS(t *testing.T) {
	missing := errors.New("virtiofsd is missing")
	bindRoot := []config.Mount{{Type: config.HostBind, Target: "/host", Source: "/"}}
	for _, tt := range []struct {
		name    string
		uri     string
		ask     string
		uid     int
		lacking error
		mounts  []config.Mount
		want    string
		wantErr string
	}{
		{name: "system as root", uri: "qemu:///system", want: "9p"},
		{name: "embedded as root", uri: "qemu:///embed?root=/x", want: "9p"},
		{name: "system as a user", uri: "qemu:///system", uid: 1001, want: "9p"},
		{name: "session", uri: "qemu:///session", want: "9p"},
		{name: "remote", uri: "qemu+ssh://h/system", want: "9p"},
		{name: "no virtiofsd", uri: "qemu:///system", lacking: missing, want: "9p"},
		{name: "9p asked", uri: "qemu:///system", ask: "9p", want: "9p"},
		{name: "9p asked as a user", uri: "qemu:///session", uid: 1001, ask: "9p", want: "9p"},
		{name: "writable / bound", uri: "qemu:///system", mounts: bindRoot, want: "9p"},
		{name: "read-only / bound", uri: "qemu:///system", ask: "virtiofs", mounts: []config.Mount{{Type: config.HostBind, Target: "/host", Source: "/", ReadOnly: true}}, want: "virtiofs"},
		{name: "virtiofs asked on embedded", uri: "qemu:///embed?root=/x", ask: "virtiofs", want: "virtiofs"},
		{name: "virtiofs asked", uri: "qemu:///system", ask: "virtiofs", want: "virtiofs"},
		{name: "virtiofs asked as a user", uri: "qemu:///system", uid: 1001, ask: "virtiofs", wantErr: "--share-fs virtiofs: virtiofsd reads the host's files as root"},
		{name: "virtiofs asked on session", uri: "qemu:///session", ask: "virtiofs", wantErr: "--share-fs virtiofs: libvirt 9.0 runs virtiofsd only as root"},
		{name: "virtiofs asked remotely", uri: "qemu+ssh://h/system", ask: "virtiofs", wantErr: "--share-fs virtiofs: only for a local URI"},
		{name: "virtiofs asked, missing", uri: "qemu:///system", ask: "virtiofs", lacking: missing, wantErr: "--share-fs virtiofs: virtiofsd is missing"},
		{name: "no virtiofs module", uri: "qemu:///system", lacking: errors.New("the guest kernel's modules lack it"), want: "9p"},
		{name: "virtiofs asked, writable / bound", uri: "qemu:///system", ask: "virtiofs", mounts: bindRoot, wantErr: "cannot export / writable (-m host-bind:/host=/)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &config.Sandbox{Driver: config.QEMU, URI: tt.uri, Mounts: tt.mounts, Kernel: config.Kernel{ShareFS: tt.ask}}
			got, err := shareFS(cfg, tt.uid, tt.lacking)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, config.ErrInvalid) {
					t.Fatalf("shareFS() = %q, %v; want an invalid-config error with %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("shareFS() = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestShares(t *testing.T) {
	s := shares{fs: guest.VirtiofsShares, readOnlyDaemon: "/libexec/virt-sandbox-virtiofsd"}
	for _, tt := range []struct {
		readonly bool
		daemon   string
	}{{true, "/libexec/virt-sandbox-virtiofsd"}, {false, virtiofsd}} {
		f := s.share("/src", "tag", tt.readonly, false)
		if f.Driver == nil || f.Driver.Type != "virtiofs" || f.Binary == nil || f.Binary.Path != tt.daemon {
			t.Errorf("share(readonly %v) = driver %+v binary %+v; want virtiofs served by %s", tt.readonly, f.Driver, f.Binary, tt.daemon)
		}
		if f.Binary.ThreadPool == nil || f.Binary.ThreadPool.Size != virtiofsdThreads {
			t.Errorf("share(readonly %v) has thread pool %+v; want %d threads", tt.readonly, f.Binary.ThreadPool, virtiofsdThreads)
		}
		if f.ReadOnly != nil {
			t.Errorf("share(readonly %v) has <readonly/>, which libvirt 9.0 refuses for virtiofs", tt.readonly)
		}
		if f.Source.Mount.Dir != "/src" || f.Target.Dir != "tag" {
			t.Errorf("share() = %s on %s; want /src on tag", f.Source.Mount.Dir, f.Target.Dir)
		}
	}
	if f := s.share("/", "root", true, true); f.Binary.Cache == nil || f.Binary.Cache.Mode != "always" {
		t.Errorf("lasting share's cache = %+v; want always", f.Binary.Cache)
	}
	if f := s.share("/src", "tag", false, false); f.Binary.Cache != nil {
		t.Errorf("share's cache = %+v; want virtiofsd's default (auto): none refuses shared mappings", f.Binary.Cache)
	}
	ninep := shares{fs: guest.NinePShares}
	for _, readonly := range []bool{true, false} {
		f := ninep.share("/src", "tag", readonly, false)
		if f.Driver == nil || f.Driver.Type != "path" || f.MultiDevs != "remap" || (f.ReadOnly != nil) != readonly {
			t.Errorf("9p share(readonly %v) = %+v; want a 9p export, multidevs=remap, read-only as asked", readonly, f)
		}
	}
}

func TestModulesForVirtiofs(t *testing.T) {
	cfg := &config.Sandbox{Driver: config.QEMU}
	if got := modulesFor(cfg, nil, guest.VirtiofsShares); !slices.Contains(got, "virtiofs") || !slices.Contains(got, "9p") {
		t.Errorf("modulesFor(virtiofs) = %v; want virtiofs, and 9p for the config share", got)
	}
	if got := modulesFor(cfg, nil, guest.NinePShares); slices.Contains(got, "virtiofs") {
		t.Errorf("modulesFor(9p) = %v; want no virtiofs", got)
	}
}

// TestModulesForHostImages: the filesystem modules are those the launcher
// found in each host-image mount, by the mount's index.
func TestModulesForHostImages(t *testing.T) {
	cfg := &config.Sandbox{Driver: config.QEMU, Mounts: []config.Mount{
		{Type: config.HostBind, Target: "/data", Source: "/srv"},
		{Type: config.HostImage, Target: "/img", Source: "/i.img"},
	}}
	for _, tt := range []struct {
		mountFS map[int]string
		want    string
		notWant string
	}{
		{mountFS: map[int]string{1: "xfs"}, want: "xfs", notWant: "vfat"},
		{mountFS: map[int]string{1: "vfat"}, want: "vfat", notWant: "xfs"},
	} {
		got := modulesFor(cfg, tt.mountFS, guest.NinePShares)
		if !slices.Contains(got, tt.want) || slices.Contains(got, tt.notWant) {
			t.Errorf("modulesFor(mount filesystems %v) = %v; want %s and no %s", tt.mountFS, got, tt.want, tt.notWant)
		}
	}
}
