package initrd

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestCachedDamaged: a cached initrd that is truncated, garbled or empty
// is rebuilt, never returned as it is.
func TestCachedDamaged(t *testing.T) {
	in := newInputs(t, "a.ko", "b.ko.xz")
	for _, tt := range []struct {
		name   string
		damage func([]byte) []byte
	}{
		{"truncated in an entry", func(b []byte) []byte { return b[:len(b)/2] }},
		{"truncated before the trailer", func(b []byte) []byte { return b[:strings.Index(string(b), "TRAILER!!!")-110] }},
		{"empty", func([]byte) []byte { return nil }},
		{"garbled content", func(b []byte) []byte {
			i := strings.Index(string(b), "module b.ko.xz")
			b[i] = 'M'
			return b
		}},
		{"garbled header", func(b []byte) []byte { b[3] = 'x'; return b }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cache := t.TempDir()
			res, err := Cached(cache, in.init, in.modules)
			if err != nil {
				t.Fatal(err)
			}
			good, err := os.ReadFile(res.Path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(res.Path, tt.damage(append([]byte(nil), good...)), 0o644); err != nil {
				t.Fatal(err)
			}
			again, err := Cached(cache, in.init, in.modules)
			if err != nil {
				t.Fatal(err)
			}
			if !again.Built || !again.Damaged || again.Path != res.Path {
				t.Errorf("Cached() over a damaged initrd = %+v, want it rebuilt at %s", again, res.Path)
			}
			if b, _ := os.ReadFile(again.Path); string(b) != string(good) {
				t.Errorf("the rebuilt initrd differs from the first build")
			}
			if names := cacheFiles(t, cache); len(names) != 1 {
				t.Errorf("cache holds %q, want the initrd only", names)
			}
			// Intact now: used as it is.
			if res, err := Cached(cache, in.init, in.modules); err != nil || res.Built {
				t.Errorf("Cached() after the rebuild = %+v, %v, want it cached", res, err)
			}
		})
	}
}

// TestCacheErrorWords: errors about the cache name its directory, never a
// temporary file in it; errors about an input keep its path.
func TestCacheErrorWords(t *testing.T) {
	cache := t.TempDir()
	in := newInputs(t, "a.ko")
	// A cache directory that cannot be written stands for a full one.
	ro := filepath.Join(cache, "ro")
	if err := os.Mkdir(ro, 0o555); err != nil {
		t.Fatal(err)
	}
	if os.Getuid() != 0 {
		_, err := Cached(ro, in.init, in.modules)
		if err == nil || err.Error() != "initrd cache "+ro+": permission denied" {
			t.Errorf("Cached(read-only) = %v, want %q", err, "initrd cache "+ro+": permission denied")
		}
	}
	err := cacheError(cache, &os.PathError{Op: "write", Path: filepath.Join(cache, ".initrd-123"), Err: errNoSpace})
	if want := "initrd cache " + cache + ": no space left on device"; err == nil || err.Error() != want {
		t.Errorf("cacheError() = %v, want %q", err, want)
	}
	os.Remove(in.modules[0].Path)
	_, err = Cached(cache, in.init, in.modules)
	if err == nil || !strings.Contains(err.Error(), in.modules[0].Path) {
		t.Errorf("Cached(missing input) = %v, want it to name %s", err, in.modules[0].Path)
	}
}

var errNoSpace = syscall.ENOSPC
