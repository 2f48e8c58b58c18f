package kmod

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// FuzzOpen feeds arbitrary module tree files to Open and Resolve. Whatever
// the input, Resolve must return a valid load order or an ErrNotFound or
// ErrCycle error, and must not panic or hang.
func FuzzOpen(f *testing.F) {
	for _, dep := range []string{
		testTree["modules.dep"],
		"a.ko: b.ko\nb.ko: c.ko\nc.ko: a.ko\n",
		"a.ko: a.ko\n",
		"a.ko: b.ko c.ko\nb.ko: c.ko\nc.ko:\n",
		"/abs/a.ko.zst: rel/b-c.ko.xz\nrel/b-c.ko.xz:\n",
		"a.ko: missing.ko\n",
		"a.ko b.ko\n",
	} {
		f.Add(dep, testTree["modules.builtin"], testTree["modules.alias"], "fs-9p")
	}
	f.Add("a.ko:\n", "a.ko\n", "alias x* a\nalias [ a\n", "xyz")
	f.Add("a.ko: b.ko\n", "b.ko\n", "", "a")

	// One directory, rewritten for each input, keeps the file system out of
	// the way of the fuzzer; inputs run one at a time in each process.
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, dep, builtin, alias, req string) {
		// The fuzzer has no timeout of its own. Crashing the process makes
		// it report the input that hangs.
		hang := time.AfterFunc(10*time.Second, func() { panic("Open or Resolve is taking over 10s") })
		defer hang.Stop()

		for name, content := range map[string]string{
			"modules.dep":     dep,
			"modules.builtin": builtin,
			"modules.alias":   alias,
		} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		tr, err := Open(dir)
		if err != nil {
			return
		}
		all := make([]string, 0, len(tr.deps))
		for n := range tr.deps {
			all = append(all, n)
		}
		slices.Sort(all)
		for _, req := range [][]string{{req}, all} {
			mods, err := tr.Resolve(req...)
			if err != nil {
				if !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrCycle) {
					t.Errorf("Resolve(%q) = %v, want nil, %v or %v", req, err, ErrNotFound, ErrCycle)
				}
				continue
			}
			if err := loadOrderError(tr, mods); err != nil {
				t.Errorf("Resolve(%q): %v", req, err)
			}
		}
	})
}
