package guest

import (
	"reflect"
	"testing"
)

func TestModuleEntry(t *testing.T) {
	for _, tt := range []struct {
		i    int
		file string
		want string
	}{
		{0, "/lib/modules/6.1.0/kernel/net/9p/9pnet.ko.xz", "modules/000-9pnet.ko.xz"},
		{7, "virtio_ring.ko", "modules/007-virtio_ring.ko"},
		{42, "/m/fs/overlay/overlay.ko.zst", "modules/042-overlay.ko.zst"},
		{1234, "/m/a-b.ko", "modules/1234-a-b.ko"},
	} {
		if got := ModuleEntry(tt.i, tt.file); got != tt.want {
			t.Errorf("ModuleEntry(%d, %q) = %q, want %q", tt.i, tt.file, got, tt.want)
		}
	}
}

func TestModules(t *testing.T) {
	for _, tt := range []struct {
		name    string
		entries []string
		want    []Module
		wantErr bool
	}{
		{name: "none", entries: nil, want: []Module{}},
		{
			name:    "directory order is not load order",
			entries: []string{"002-9p.ko.gz", "000-virtio_ring.ko", "001-virtio_pci.ko.xz"},
			want: []Module{
				{"000-virtio_ring.ko", "virtio_ring.ko"},
				{"001-virtio_pci.ko.xz", "virtio_pci.ko.xz"},
				{"002-9p.ko.gz", "9p.ko.gz"},
			},
		},
		{
			name:    "a dash in the file's name",
			entries: []string{"001-nf_conntrack-ipv4.ko", "000-a.ko"},
			want:    []Module{{"000-a.ko", "a.ko"}, {"001-nf_conntrack-ipv4.ko", "nf_conntrack-ipv4.ko"}},
		},
		{
			name:    "more than 999 modules order by number, not text",
			entries: []string{"1000-z.ko", "999-y.ko"},
			want:    []Module{{"999-y.ko", "y.ko"}, {"1000-z.ko", "z.ko"}},
		},
		{name: "no place", entries: []string{"9p.ko"}, wantErr: true},
		{name: "place not a number", entries: []string{"abc-9p.ko"}, wantErr: true},
		{name: "signed place", entries: []string{"+01-9p.ko"}, wantErr: true},
		{name: "no file", entries: []string{"003-"}, wantErr: true},
		{name: "empty place", entries: []string{"-9p.ko"}, wantErr: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Modules(tt.entries)
			if (err != nil) != tt.wantErr || (!tt.wantErr && !reflect.DeepEqual(got, tt.want)) {
				t.Errorf("Modules(%q) = %v, %v; want %v (error: %v)", tt.entries, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// TestModulesReadsModuleEntry: what the launcher names, the init reads
// back in the launcher's order.
func TestModulesReadsModuleEntry(t *testing.T) {
	files := []string{"/m/virtio.ko", "/m/virtio_ring.ko.xz", "/m/9pnet.ko", "/m/9p.ko.zst"}
	var entries []string
	for i := len(files) - 1; i >= 0; i-- {
		entries = append(entries, ModuleEntry(i, files[i])[len(ModulesDir)+1:])
	}
	mods, err := Modules(entries)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range mods {
		if want := ModuleEntry(i, files[i]); ModulesDir+"/"+m.Entry != want || m.File != files[i][len("/m/"):] {
			t.Errorf("module %d = %+v, want entry %s of file %s", i, m, want, files[i])
		}
	}
}

func TestAppChannelName(t *testing.T) {
	for _, tt := range []struct {
		service bool
		want    []string
	}{
		{false, []string{"org.virt-sandbox.app"}},
		{true, []string{"org.virt-sandbox.app", "org.virt-sandbox.app.1", "org.virt-sandbox.app.2", "org.virt-sandbox.app.3"}},
	} {
		var got []string
		for i := range AppChannels(tt.service) {
			got = append(got, AppChannelName(i))
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("channels of a sandbox (service %v) = %q, want %q", tt.service, got, tt.want)
		}
	}
}

func TestMountNames(t *testing.T) {
	for _, tt := range []struct {
		i          int
		tag, stage string
	}{
		{0, "sandbox-m0", "/run/virt-sandbox-mnt/0"},
		{12, "sandbox-m12", "/run/virt-sandbox-mnt/12"},
	} {
		if got := MountTag(tt.i); got != tt.tag {
			t.Errorf("MountTag(%d) = %q, want %q", tt.i, got, tt.tag)
		}
		if got := MountStage(tt.i); got != tt.stage {
			t.Errorf("MountStage(%d) = %q, want %q", tt.i, got, tt.stage)
		}
	}
}
