package kmod

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// writeTree writes files (name -> content) into a new temporary directory.
func writeTree(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// loadOrderError reports why mods is not a valid load order for tr: a
// module twice, a module before one of its non-built-in dependencies, or a
// module that does not match the tree.
func loadOrderError(tr *Tree, mods []Module) error {
	loaded := map[string]bool{}
	for i, m := range mods {
		if loaded[m.Name] {
			return fmt.Errorf("module %d: %s is listed twice", i, m.Name)
		}
		if tr.builtin[m.Name] {
			return fmt.Errorf("module %d: %s is built in", i, m.Name)
		}
		deps, ok := tr.deps[m.Name]
		if !ok {
			return fmt.Errorf("module %d: %s is not in modules.dep", i, m.Name)
		}
		for _, d := range deps {
			if !tr.builtin[d] && !loaded[d] {
				return fmt.Errorf("module %d: %s comes before its dependency %s", i, m.Name, d)
			}
		}
		if m.Path != tr.paths[m.Name] {
			return fmt.Errorf("module %d: %+v does not match path %q in the tree", i, m, tr.paths[m.Name])
		}
		loaded[m.Name] = true
	}
	return nil
}

func names(mods []Module) []string {
	var s []string
	for _, m := range mods {
		s = append(s, m.Name)
	}
	return s
}

func TestName(t *testing.T) {
	for _, tt := range []struct {
		in, want string
	}{
		{"ext4", "ext4"},
		{"virtio-rng", "virtio_rng"},
		{"virtio_rng", "virtio_rng"},
		{"9p.ko", "9p"},
		{"kernel/fs/9p/9p.ko", "9p"},
		{"/lib/modules/6.1.0/kernel/drivers/char/hw_random/virtio-rng.ko.xz", "virtio_rng"},
		{"a-b.ko.gz", "a_b"},
		{"a.ko.zst", "a"},
		{"a.ko.bz2", "a.ko.bz2"},
		{"a.o", "a.o"},
		{"dir/", ""},
		{"", ""},
	} {
		if got := Name(tt.in); got != tt.want {
			t.Errorf("Name(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestNormalizeAlias(t *testing.T) {
	for _, tt := range []struct {
		in, want string
	}{
		{"fs-9p", "fs_9p"},
		{"fs_9p", "fs_9p"},
		{"pci:v00001AF4d[0-9]*", "pci:v00001AF4d[0-9]*"},
		{"a-[x-z]-b", "a_[x-z]_b"},
		{"crypto-crc32c-generic", "crypto_crc32c_generic"},
	} {
		if got := normalizeAlias(tt.in); got != tt.want {
			t.Errorf("normalizeAlias(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// testTree is laid out like a real tree, with a few twists: virtio_console
// lists only part of its dependency closure, some files are compressed,
// one has a hyphen, one has an absolute path, and ext4 depends on a
// built-in module.
var testTree = map[string]string{
	"modules.dep": `kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/virtio_console.ko.xz: kernel/drivers/virtio/virtio.ko
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/9p/9pnet.ko.gz:
kernel/net/9p/9pnet_virtio.ko.zst: kernel/net/9p/9pnet.ko.gz kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/fs/netfs/netfs.ko:
kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko.gz kernel/fs/netfs/netfs.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/jbd2/jbd2.ko
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/crypto/crc32c_generic.ko:
/opt/extra/vboxsf.ko: kernel/fs/netfs/netfs.ko
`,
	"modules.builtin": `kernel/lib/crc16.ko
kernel/fs/fuse/fuse.ko
`,
	"modules.alias": `# Aliases extracted from modules themselves.
alias fs-9p 9p
alias virtio:d00000003v* virtio_console
alias virtio:d00000004v* virtio-rng
alias pci:v00001AF4d[0-9]* virtio_pci
alias crypto-crc32c crc32c_intel
alias crypto-crc32c crc32c_generic
alias crypto-crc32c crc32c-intel
`,
	"modules.builtin.modinfo": "fuse.license=GPL\x00fuse.alias=fs-fuse\x00fuse.alias=char-major-10-229\x00",
}

func TestResolve(t *testing.T) {
	tr, err := Open(writeTree(t, testTree))
	if err != nil {
		t.Fatal(err)
	}
	virtio := []string{"virtio_ring", "virtio"}
	for _, tt := range []struct {
		req  []string
		want []string
	}{
		{nil, nil},
		{[]string{"virtio_ring"}, []string{"virtio_ring"}},
		{[]string{"virtio_pci"}, []string{"virtio_pci_modern_dev", "virtio_ring", "virtio", "virtio_pci"}},
		// Only virtio is listed; virtio_ring comes from virtio's entry.
		{[]string{"virtio_console"}, append(virtio, "virtio_console")},
		{[]string{"virtio-console"}, append(virtio, "virtio_console")},
		{[]string{"virtio_rng"}, append(virtio, "virtio_rng")},
		{[]string{"virtio-rng"}, append(virtio, "virtio_rng")},
		{[]string{"kernel/fs/9p/9p.ko"}, []string{"9pnet", "netfs", "9p"}},
		{[]string{"9p.ko"}, []string{"9pnet", "netfs", "9p"}},
		{[]string{"fs-9p"}, []string{"9pnet", "netfs", "9p"}},
		{[]string{"fs_9p"}, []string{"9pnet", "netfs", "9p"}},
		{[]string{"virtio:d00000003v00001AF4"}, append(virtio, "virtio_console")},
		{[]string{"virtio:d00000004v00001AF4"}, append(virtio, "virtio_rng")},
		{[]string{"pci:v00001AF4d1000"}, []string{"virtio_pci_modern_dev", "virtio_ring", "virtio", "virtio_pci"}},
		{[]string{"crypto-crc32c"}, []string{"crc32c_intel", "crc32c_generic"}},
		{[]string{"ext4"}, []string{"jbd2", "ext4"}},
		{[]string{"crc16"}, nil},
		{[]string{"fuse"}, nil},
		{[]string{"fs-fuse"}, nil},
		{[]string{"char-major-10-229"}, nil},
		{[]string{"vboxsf"}, []string{"netfs", "vboxsf"}},
		{
			[]string{"9p", "9pnet_virtio", "virtio_pci", "fs-9p", "crc16", "9p"},
			[]string{"9pnet", "netfs", "9p", "virtio_ring", "virtio", "9pnet_virtio", "virtio_pci_modern_dev", "virtio_pci"},
		},
	} {
		got, err := tr.Resolve(tt.req...)
		if err != nil {
			t.Errorf("Resolve(%q) = %v, want %q", tt.req, err, tt.want)
			continue
		}
		if !slices.Equal(names(got), tt.want) {
			t.Errorf("Resolve(%q) = %q, want %q", tt.req, names(got), tt.want)
		}
		if err := loadOrderError(tr, got); err != nil {
			t.Errorf("Resolve(%q): %v", tt.req, err)
		}
	}
}

func TestResolveModule(t *testing.T) {
	dir := writeTree(t, testTree)
	tr, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []Module{
		{Name: "virtio_ring", Path: filepath.Join(dir, "kernel/drivers/virtio/virtio_ring.ko")},
		{Name: "virtio_rng", Path: filepath.Join(dir, "kernel/drivers/char/hw_random/virtio-rng.ko")},
		{Name: "9pnet", Path: filepath.Join(dir, "kernel/net/9p/9pnet.ko.gz")},
		{Name: "virtio_console", Path: filepath.Join(dir, "kernel/drivers/char/virtio_console.ko.xz")},
		{Name: "9pnet_virtio", Path: filepath.Join(dir, "kernel/net/9p/9pnet_virtio.ko.zst")},
		{Name: "vboxsf", Path: "/opt/extra/vboxsf.ko"},
	} {
		mods, err := tr.Resolve(want.Name)
		if err != nil {
			t.Errorf("Resolve(%q) = %v, want %+v last", want.Name, err, want)
			continue
		}
		if got := mods[len(mods)-1]; got != want {
			t.Errorf("Resolve(%q) last = %+v, want %+v", want.Name, got, want)
		}
	}
}

func TestResolveRelativeDir(t *testing.T) {
	dir := writeTree(t, map[string]string{"modules.dep": "kernel/a.ko:\n"})
	t.Chdir(dir)
	tr, err := Open(".")
	if err != nil {
		t.Fatal(err)
	}
	mods, err := tr.Resolve("a")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := mods[0].Path, filepath.Join(dir, "kernel/a.ko"); got != want {
		t.Errorf("Resolve(a) path = %q, want %q", got, want)
	}
}

func TestResolveErrors(t *testing.T) {
	for _, tt := range []struct {
		name  string
		dep   string
		alias string
		req   []string
		want  error
		msg   string
	}{
		{"unknown", "a.ko:\n", "", []string{"a", "nope"}, ErrNotFound, "kmod: nope: module not found"},
		{"empty name", "a.ko:\n", "", []string{""}, ErrNotFound, "module not found"},
		{"missing dep", "a.ko: b.ko\n", "", []string{"a"}, ErrNotFound, "b (needed by a)"},
		{"missing deep dep", "a.ko: b.ko\nb.ko: c-d.ko\n", "", []string{"a"}, ErrNotFound, "c_d (needed by b)"},
		{"alias to missing", "a.ko:\n", "alias fs-x x\n", []string{"fs-x"}, ErrNotFound, "x (alias fs-x)"},
		{"cycle", "a.ko: b.ko\nb.ko: c.ko\nc.ko: a.ko\n", "", []string{"a"}, ErrCycle, "a -> b -> c -> a"},
		{"self", "a.ko: a.ko\n", "", []string{"a"}, ErrCycle, "a -> a"},
		{"cycle below", "top.ko: a.ko\na.ko: b.ko\nb.ko: a.ko\n", "", []string{"top"}, ErrCycle, "a -> b -> a"},
		{"cycle second request", "x.ko:\na.ko: b.ko\nb.ko: a.ko\n", "", []string{"x", "b"}, ErrCycle, "b -> a -> b"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := Open(writeTree(t, map[string]string{"modules.dep": tt.dep, "modules.alias": tt.alias}))
			if err != nil {
				t.Fatal(err)
			}
			mods, err := tr.Resolve(tt.req...)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("Resolve(%q) = %q, %v, want error %q containing %q", tt.req, names(mods), err, tt.want, tt.msg)
			}
		})
	}
}

func TestOpen(t *testing.T) {
	for _, tt := range []struct {
		name  string
		files map[string]string
		want  string // substring of the error; "" for success
	}{
		{"only modules.dep", map[string]string{"modules.dep": "a.ko:\n"}, ""},
		{"empty modules.dep", map[string]string{"modules.dep": ""}, ""},
		{"comments and blanks", map[string]string{"modules.dep": "# c\n\n  a.ko: \r\n", "modules.builtin": "\n# c\nb.ko\n", "modules.alias": "# c\n\n"}, ""},
		{"no modules.dep", map[string]string{"modules.alias": "alias x y\n"}, "modules.dep: no such file"},
		{"no colon", map[string]string{"modules.dep": "a.ko:\na.ko b.ko\n"}, "modules.dep:2:"},
		{"no module", map[string]string{"modules.dep": ": b.ko\n"}, "modules.dep:1:"},
		{"directory as module", map[string]string{"modules.dep": "kernel/: b.ko\n"}, "modules.dep:1:"},
		{"directory as dep", map[string]string{"modules.dep": "a.ko: kernel/\n"}, "modules.dep:1: bad dependency"},
		{"short alias", map[string]string{"modules.dep": "a.ko:\n", "modules.alias": "alias x\n"}, "modules.alias:1:"},
		{"not an alias", map[string]string{"modules.dep": "a.ko:\n", "modules.alias": "# c\noptions x y\n"}, "modules.alias:2:"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Open(writeTree(t, tt.files))
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("Open() = %v, want error containing %q", err, tt.want)
			}
		})
	}
}

func TestOpenMissingDir(t *testing.T) {
	_, err := Open(filepath.Join(t.TempDir(), "nope"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open(missing dir) = %v, want %v", err, fs.ErrNotExist)
	}
}

func TestOpenDuplicate(t *testing.T) {
	tr, err := Open(writeTree(t, map[string]string{"modules.dep": "updates/a.ko: b.ko\nb.ko:\nkernel/a.ko:\n"}))
	if err != nil {
		t.Fatal(err)
	}
	mods, err := tr.Resolve("a")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(mods), []string{"b", "a"}; !slices.Equal(got, want) {
		t.Errorf("Resolve(a) = %q, want %q: the first entry should win", got, want)
	}
}

func TestCompression(t *testing.T) {
	for _, tt := range []struct{ file, want string }{
		{"virtio_blk.ko", ""},
		{"virtio_blk.ko.gz", "gz"},
		{"virtio_blk.ko.xz", "xz"},
		{"9pnet_virtio.ko.zst", "zst"},
		{"x.ko.bz2", ""},
		{"x.ko.zstd", ""},
		{"", ""},
	} {
		if got := Compression(tt.file); got != tt.want {
			t.Errorf("Compression(%q) = %q, want %q", tt.file, got, tt.want)
		}
	}
}
