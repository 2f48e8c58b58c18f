package sandbox

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/virt-sandbox/virt-sandbox/config"
)

func TestFindKernel(t *testing.T) {
	m := newFakeMachine(t)
	// A tree given directly, as --kmodpath may be, rather than a directory
	// of trees named by version.
	flat := t.TempDir()
	writeModuleTree(t, flat)
	// Not a kernel: with --kernver it need not be one.
	notKernel := filepath.Join(t.TempDir(), "vmlinux")
	if err := os.WriteFile(notKernel, []byte("not a kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		k       config.Kernel
		want    kernel
		wantErr []string
	}{
		{
			name: "path, version from the image",
			k:    config.Kernel{Path: m.kernel, ModulesDir: m.modRoot},
			want: kernel{path: m.kernel, version: fakeKernelVersion, modules: filepath.Join(m.modRoot, fakeKernelVersion)},
		},
		{
			name: "path and version",
			k:    config.Kernel{Path: notKernel, Version: fakeKernelVersion, ModulesDir: m.modRoot},
			want: kernel{path: notKernel, version: fakeKernelVersion, modules: filepath.Join(m.modRoot, fakeKernelVersion)},
		},
		{
			name: "modules dir is a tree",
			k:    config.Kernel{Path: m.kernel, ModulesDir: flat},
			want: kernel{path: m.kernel, version: fakeKernelVersion, modules: flat},
		},
		{
			name:    "missing path",
			k:       config.Kernel{Path: filepath.Join(flat, "vmlinuz-nowhere"), ModulesDir: m.modRoot},
			wantErr: []string{filepath.Join(flat, "vmlinuz-nowhere")},
		},
		{
			name:    "not a kernel, no version",
			k:       config.Kernel{Path: notKernel, ModulesDir: m.modRoot},
			wantErr: []string{notKernel, "--kernver"},
		},
		{
			name:    "no modules for the version",
			k:       config.Kernel{Path: notKernel, Version: "5.0.0-other", ModulesDir: m.modRoot},
			wantErr: []string{"modules.dep", filepath.Join(m.modRoot, "5.0.0-other"), "--kmodpath"},
		},
		{
			name:    "version not in /boot",
			k:       config.Kernel{Version: "0.0.0-virt-sandbox-test", ModulesDir: m.modRoot},
			wantErr: []string{"/boot/vmlinuz-0.0.0-virt-sandbox-test"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := findKernel(tt.k)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("findKernel(%+v) = %+v, nil, want an error naming %q", tt.k, got, tt.wantErr)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("findKernel(%+v) = %q, want it to name %q", tt.k, err, w)
					}
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("findKernel(%+v) = %+v, %v, want %+v, nil", tt.k, got, err, tt.want)
			}
		})
	}
}

func TestBzImageVersion(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := filepath.Join(dir, "bzImage")
	writeBzImage(t, good, "6.1.0-9-amd64 (debian-kernel@lists.debian.org) #1 SMP")
	// A banner ending at the NUL without a space after the version.
	bare := filepath.Join(dir, "bare")
	writeBzImage(t, bare, "6.8.0")
	noVersion := make([]byte, 0x400)
	copy(noVersion[0x202:], "HdrS")
	for _, tt := range []struct {
		name, path, want string
		wantErr          bool
	}{
		{name: "bzImage", path: good, want: "6.1.0-9-amd64"},
		{name: "version only", path: bare, want: "6.8.0"},
		{name: "text file", path: write("text", bytes.Repeat([]byte("not a kernel\n"), 100)), wantErr: true},
		{name: "short file", path: write("short", []byte("HdrS")), wantErr: true},
		{name: "empty version", path: write("noversion", noVersion), wantErr: true},
		{name: "missing", path: filepath.Join(dir, "missing"), wantErr: true},
	} {
		got, err := bzImageVersion(tt.path)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("bzImageVersion(%s) = %q, %v, want %q, error %v", tt.name, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestVersionLess(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want bool
	}{
		// Numerically, not as strings: "10" > "9".
		{"6.1.0-9", "6.1.0-10", true},
		{"6.1.0-10", "6.1.0-9", false},
		{"5.10", "6.1", true},
		{"6.1", "5.10", false},
		{"6.1.0-9-amd64", "6.1.0-10-amd64", true},
		{"6.1.0", "6.1.0", false},
		{"6.1.0-9-amd64", "6.1.0-9-amd64", false},
		// A longer version of the same prefix is newer.
		{"6.1", "6.1.0", true},
		{"6.1.0", "6.1", false},
		{"", "1", true},
		{"", "", false},
	} {
		if got := versionLess(tt.a, tt.b); got != tt.want {
			t.Errorf("versionLess(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestCachedKernel(t *testing.T) {
	cache := filepath.Join(t.TempDir(), "kernel")
	src := filepath.Join(t.TempDir(), "vmlinuz-6.1.0-test")
	img := writeBzImage(t, src, fakeKernelVersion)

	first, err := cachedKernel(cache, src)
	if err != nil {
		t.Fatalf("cachedKernel(%s, %s) = %v", cache, src, err)
	}
	if filepath.Dir(first) != cache || !strings.HasPrefix(filepath.Base(first), filepath.Base(src)+"-") {
		t.Errorf("cachedKernel(%s, %s) = %s, want %s-KEY in the cache", cache, src, first, filepath.Base(src))
	}
	if b, err := os.ReadFile(first); err != nil || !bytes.Equal(b, img) {
		t.Errorf("cachedKernel(%s, %s) = %s holding %d bytes, %v, want a copy of the %d bytes", cache, src, first, len(b), err, len(img))
	}
	// QEMU may run as another user: the copy must be readable.
	if fi, err := os.Stat(first); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("cachedKernel(%s, %s) = %s with mode %v, %v, want 0644", cache, src, first, fi.Mode(), err)
	}
	firstInfo, err := os.Stat(first)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := cachedKernel(cache, src); err != nil || again != first {
		t.Errorf("cachedKernel(%s, %s) again = %s, %v, want %s", cache, src, again, err, first)
	}
	// Copied once: a second copy would be renamed over the first.
	if fi, err := os.Stat(first); err != nil || !os.SameFile(fi, firstInfo) {
		t.Errorf("cachedKernel(%s, %s) again replaced %s, want the first copy kept", cache, src, first)
	}

	// An updated kernel (same path, new mtime) is a new copy.
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(src, later, later); err != nil {
		t.Fatal(err)
	}
	updated, err := cachedKernel(cache, src)
	if err != nil || updated == first {
		t.Errorf("cachedKernel(%s, %s) after touching it = %s, %v, want a path other than %s", cache, src, updated, err, first)
	}

	ents, err := os.ReadDir(cache)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	// Two copies, no temporary files left over.
	if len(names) != 2 {
		t.Errorf("cache %s holds %q after two kernels, want exactly their two copies", cache, names)
	}

	if got, err := cachedKernel(cache, filepath.Join(cache, "missing")); err == nil {
		t.Errorf("cachedKernel(%s, missing) = %s, nil, want an error", cache, got)
	}
}
