package sandbox

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestRootImageUpload checks the volume name of an image's root: keyed by
// its digest, and short enough that its path in the default pool fits the
// 63 bytes a loop device keeps of its file's name (libvirt's LXC driver
// fails on a longer one).
func TestRootImageUpload(t *testing.T) {
	hex := strings.Repeat("0123456789abcdef", 4)
	for _, tt := range []struct {
		path, want string
	}{
		{"/var/lib/virt-sandbox/images/rootfs/" + hex + ".squashfs", "rootfs-0123456789abcdef"},
		{"/s/rootfs/fedcba9876543210" + hex[16:] + ".squashfs", "rootfs-fedcba9876543210"},
	} {
		u := rootImageUpload(tt.path)
		if u.name != tt.want || u.path != tt.path {
			t.Errorf("rootImageUpload(%s) = name %q, path %q; want %q", tt.path, u.name, u.path, tt.want)
		}
		if p := filepath.Join(defaultPoolDir, u.name); len(p) > 63 {
			t.Errorf("volume path %s is %d bytes, more than a loop device keeps", p, len(p))
		}
	}
}

// TestVolumeXML checks the volume definitions uploads make: raw, of the
// file's size in bytes, with the file's mode.
func TestVolumeXML(t *testing.T) {
	x := volumeXML("init-abc", 12345, 0o755)
	for _, want := range []string{"<name>init-abc</name>", `<capacity unit="B">12345</capacity>`, `<format type="raw">`, "<mode>0755</mode>"} {
		if !strings.Contains(x, want) {
			t.Errorf("volumeXML() = %s, lacks %s", x, want)
		}
	}
}
