package kmod

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestHostTree resolves the modules a sandbox guest needs against the real
// trees in /lib/modules, whichever of them are built in on this host.
func TestHostTree(t *testing.T) {
	deps, _ := filepath.Glob("/lib/modules/*/modules.dep")
	if len(deps) == 0 {
		t.Skip("no module tree in /lib/modules")
	}
	want := []string{"virtio_pci", "virtio_console", "9p", "9pnet_virtio", "virtio_blk", "virtio_net", "virtiofs", "ext4"}
	for _, dep := range deps {
		dir := filepath.Dir(dep)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			tr, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			mods, err := tr.Resolve(want...)
			if err != nil {
				t.Fatalf("Resolve(%q) = %v", want, err)
			}
			if err := loadOrderError(tr, mods); err != nil {
				t.Errorf("Resolve(%q): %v", want, err)
			}
			got := names(mods)
			t.Logf("load order: %q", got)
			for _, n := range want {
				if !tr.builtin[n] && !slices.Contains(got, n) {
					t.Errorf("Resolve(%q) = %q, want it to include %s", want, got, n)
				}
			}
			if i, j := slices.Index(got, "virtio_ring"), slices.Index(got, "virtio_pci"); j >= 0 && i > j {
				t.Errorf("Resolve(%q) = %q, want virtio_ring before virtio_pci", want, got)
			}
			for _, n := range want {
				if tr.builtin[n] {
					t.Logf("%s: built in", n)
					continue
				}
				one, err := tr.Resolve(n)
				if err != nil {
					t.Errorf("Resolve(%q) = %v", n, err)
				}
				t.Logf("%s: %q", n, names(one))
			}
			// Which aliases exist depends on the kernel's configuration.
			for _, alias := range []string{"fs-9p", "fs-ext4", "fs-virtiofs", "crypto-crc32c", "virtio:d00000003v00001AF4"} {
				one, err := tr.Resolve(alias)
				if err == nil {
					err = loadOrderError(tr, one)
				}
				t.Logf("%s: %q, %v", alias, names(one), err)
			}
			if len(mods) == 0 {
				return
			}
			// The smallest module is enough to check the file is where
			// modules.dep says and decompresses to ELF.
			smallest := mods[0]
			for _, m := range mods {
				if fi, err := os.Stat(m.Path); err != nil {
					t.Errorf("module %s: %v", m.Name, err)
				} else if si, err := os.Stat(smallest.Path); err == nil && fi.Size() < si.Size() {
					smallest = m
				}
			}
			img, err := ReadModule(smallest.Path)
			if err != nil || !bytes.HasPrefix(img, []byte("\x7fELF")) {
				t.Errorf("ReadModule(%s) = %.4q, %v, want an ELF image", smallest.Path, img, err)
			}
		})
	}
}
