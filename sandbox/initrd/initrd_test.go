package initrd

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cavaliergopher/cpio"

	"github.com/virt-sandbox/virt-sandbox/config/guest"
	"github.com/virt-sandbox/virt-sandbox/kmod"
)

// inputs are an init and modules written into a temporary directory.
type inputs struct {
	init    string
	modules []kmod.Module
}

// newInputs writes an init and one module per name; the names keep their
// compression suffixes, which the initrd must keep too.
func newInputs(t *testing.T, names ...string) inputs {
	t.Helper()
	dir := t.TempDir()
	in := inputs{init: filepath.Join(dir, "virt-sandbox-init")}
	if err := os.WriteFile(in.init, []byte("\x7fELF init"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		p := filepath.Join(dir, "kernel", n)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("module "+n), 0o644); err != nil {
			t.Fatal(err)
		}
		in.modules = append(in.modules, kmod.Module{Name: kmod.Name(n), Path: p})
	}
	return in
}

type cpioEntry struct {
	name string
	mode cpio.FileMode
	data string
}

func readCPIO(t *testing.T, path string) []cpioEntry {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The kernel reads only the newc format.
	if !bytes.HasPrefix(b, []byte("070701")) {
		t.Fatalf("%s starts with %.6q, want the newc magic 070701", path, b)
	}
	var out []cpioEntry
	r := cpio.NewReader(bytes.NewReader(b))
	for {
		h, err := r.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("reading %s: %v", path, err)
		}
		data, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("reading %s in %s: %v", h.Name, path, err)
		}
		out = append(out, cpioEntry{h.Name, h.Mode, string(data)})
	}
}

func cacheFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

var initrdName = regexp.MustCompile(`^initrd-[0-9a-f]{32}\.cpio$`)

func TestCachedContents(t *testing.T) {
	for _, tt := range []struct {
		name    string
		modules []string
		want    []cpioEntry
	}{
		{
			name: "no modules",
			want: []cpioEntry{
				{"modules", cpio.TypeDir | 0o755, ""},
				{"init", cpio.TypeReg | 0o755, "\x7fELF init"},
			},
		},
		{
			// In the order given, numbered so the init loads them so, with
			// their suffixes, which tell it how to decompress them.
			name:    "modules",
			modules: []string{"virtio_ring.ko", "virtio_pci.ko.xz", "9pnet.ko.zst", "9p.ko.gz", "9pnet_virtio.ko"},
			want: []cpioEntry{
				{"modules", cpio.TypeDir | 0o755, ""},
				{"init", cpio.TypeReg | 0o755, "\x7fELF init"},
				{"modules/000-virtio_ring.ko", cpio.TypeReg | 0o644, "module virtio_ring.ko"},
				{"modules/001-virtio_pci.ko.xz", cpio.TypeReg | 0o644, "module virtio_pci.ko.xz"},
				{"modules/002-9pnet.ko.zst", cpio.TypeReg | 0o644, "module 9pnet.ko.zst"},
				{"modules/003-9p.ko.gz", cpio.TypeReg | 0o644, "module 9p.ko.gz"},
				{"modules/004-9pnet_virtio.ko", cpio.TypeReg | 0o644, "module 9pnet_virtio.ko"},
			},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			in := newInputs(t, tt.modules...)
			// Not there yet: Cached makes it.
			cache := filepath.Join(t.TempDir(), "cache", "initrd")
			res, err := Cached(cache, in.init, in.modules)
			if err != nil {
				t.Fatalf("Cached(%s) = %v", cache, err)
			}
			if filepath.Dir(res.Path) != cache || !initrdName.MatchString(filepath.Base(res.Path)) {
				t.Errorf("Cached(%s).Path = %s, want initrd-HASH.cpio in the cache", cache, res.Path)
			}
			if got := readCPIO(t, res.Path); !slices.Equal(got, tt.want) {
				t.Errorf("Cached(%s) holds %+v, want %+v", cache, got, tt.want)
			}
			// QEMU may run as another user.
			if fi, err := os.Stat(res.Path); err != nil || fi.Mode().Perm() != 0o644 {
				t.Errorf("Cached(%s) = %s with mode %v, %v, want 0644", cache, res.Path, fi.Mode(), err)
			}
		})
	}
}

func TestCachedOnce(t *testing.T) {
	in := newInputs(t, "a.ko", "b.ko.xz")
	cache := t.TempDir()
	first, err := Cached(cache, in.init, in.modules)
	if err != nil || !first.Built {
		t.Fatalf("Cached(%s) = %+v, %v, want Built", cache, first, err)
	}
	second, err := Cached(cache, in.init, in.modules)
	if err != nil || second.Built || second.Path != first.Path || second.Elapsed != 0 {
		t.Errorf("Cached(%s) again = %+v, %v, want {Path: %s, Built: false}", cache, second, err, first.Path)
	}
	if got := cacheFiles(t, cache); !slices.Equal(got, []string{filepath.Base(first.Path)}) {
		t.Errorf("cache holds %q, want only %s", got, filepath.Base(first.Path))
	}
}

func TestCachedRebuilds(t *testing.T) {
	for _, tt := range []struct {
		name   string
		change func(t *testing.T, in *inputs)
	}{
		{"module content", func(t *testing.T, in *inputs) {
			if err := os.WriteFile(in.modules[1].Path, []byte("a new build"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"init content", func(t *testing.T, in *inputs) {
			if err := os.WriteFile(in.init, []byte("\x7fELF a newer init"), 0o755); err != nil {
				t.Fatal(err)
			}
		}},
		// Same files, another load order.
		{"module order", func(t *testing.T, in *inputs) {
			slices.Reverse(in.modules)
		}},
		{"one module less", func(t *testing.T, in *inputs) {
			in.modules = in.modules[:1]
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			in := newInputs(t, "a.ko", "b.ko.zst")
			cache := t.TempDir()
			old, err := Cached(cache, in.init, in.modules)
			if err != nil {
				t.Fatalf("Cached(%s) = %v", cache, err)
			}
			tt.change(t, &in)
			res, err := Cached(cache, in.init, in.modules)
			if err != nil || !res.Built || res.Path == old.Path {
				t.Fatalf("Cached(%s) after a change of %s = %+v, %v, want Built at a path other than %s", cache, tt.name, res, err, old.Path)
			}
			// What is in it is the new input, not the old.
			var want []string
			for i, m := range in.modules {
				want = append(want, guest.ModuleEntry(i, m.Path))
			}
			var got []string
			for _, e := range readCPIO(t, res.Path)[2:] {
				got = append(got, e.name)
				b, _ := os.ReadFile(in.modules[len(got)-1].Path)
				if e.data != string(b) {
					t.Errorf("Cached(%s) entry %s = %q, want %q", tt.name, e.name, e.data, b)
				}
			}
			if !slices.Equal(got, want) {
				t.Errorf("Cached(%s) modules = %q, want %q", tt.name, got, want)
			}
		})
	}
}

func TestCachedConcurrent(t *testing.T) {
	in := newInputs(t, "virtio_ring.ko", "virtio_pci.ko.xz", "9p.ko.zst")
	cache := filepath.Join(t.TempDir(), "initrd")
	const n = 8
	var wg sync.WaitGroup
	results := make([]Result, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = Cached(cache, in.init, in.modules)
		}()
	}
	wg.Wait()
	built := 0
	for i := range n {
		if errs[i] != nil || results[i].Path != results[0].Path {
			t.Errorf("Cached() in goroutine %d = %+v, %v, want %s, nil", i, results[i], errs[i], results[0].Path)
		}
		if results[i].Built {
			built++
		}
	}
	if built == 0 {
		t.Errorf("Cached() in %d goroutines on an empty cache: none Built, want at least one", n)
	}
	// Each builder renames its own temporary file over the others': one
	// file is left, and it is whole.
	if got := cacheFiles(t, cache); !slices.Equal(got, []string{filepath.Base(results[0].Path)}) {
		t.Errorf("cache holds %q after %d concurrent Cached, want only %s", got, n, filepath.Base(results[0].Path))
	}
	if got := len(readCPIO(t, results[0].Path)); got != 2+len(in.modules) {
		t.Errorf("Cached() concurrently built an initrd of %d entries, want %d", got, 2+len(in.modules))
	}
}

func TestCachedMissingInput(t *testing.T) {
	in := newInputs(t, "a.ko")
	in.modules = append(in.modules, kmod.Module{Name: "gone", Path: filepath.Join(t.TempDir(), "gone.ko")})
	cache := t.TempDir()
	if res, err := Cached(cache, in.init, in.modules); err == nil || !strings.Contains(err.Error(), "gone.ko") {
		t.Errorf("Cached() with a missing module = %+v, %v, want an error naming gone.ko", res, err)
	}
	if got := cacheFiles(t, cache); len(got) != 0 {
		t.Errorf("cache holds %q after a failed Cached, want nothing", got)
	}
}
