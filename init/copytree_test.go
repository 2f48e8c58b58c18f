package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCopyTree copies a tree like an image's /run: directories keep their
// sticky and set-group-id bits, links and files come along, a fifo does
// not, and a name the destination has is kept or replaced as asked.
func TestCopyTree(t *testing.T) {
	src := t.TempDir()
	mk := func(p string, mode fs.FileMode) {
		t.Helper()
		if err := os.Mkdir(filepath.Join(src, p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(src, p), mode); err != nil {
			t.Fatal(err)
		}
	}
	mk("lock", 0o777|fs.ModeSticky)
	mk("postgresql", 0o775|fs.ModeSetgid)
	mk("own", 0o755)
	if err := os.WriteFile(filepath.Join(src, "own", "config"), []byte("image's"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "postgresql", "hint"), []byte("x"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("lock", filepath.Join(src, "lock.link")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(src, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	owner := func(fs.FileInfo) (int, int) { return os.Getuid(), os.Getgid() }

	for _, tt := range []struct {
		keep bool
		want string
	}{{true, "sandbox's"}, {false, "image's"}} {
		dst := t.TempDir()
		os.Mkdir(filepath.Join(dst, "own"), 0o700)
		os.WriteFile(filepath.Join(dst, "own", "config"), []byte("sandbox's"), 0o600)
		if err := copyTree(os.DirFS(src), ".", dst, owner, tt.keep); err != nil {
			t.Fatal(err)
		}
		for p, mode := range map[string]fs.FileMode{
			"lock":            fs.ModeDir | 0o777 | fs.ModeSticky,
			"postgresql":      fs.ModeDir | 0o775 | fs.ModeSetgid,
			"postgresql/hint": 0o640,
			"own":             fs.ModeDir | 0o700, // the destination's, merged into
		} {
			if fi, err := os.Lstat(filepath.Join(dst, p)); err != nil || fi.Mode() != mode {
				t.Errorf("keep %v: %s: %v, want mode %v", tt.keep, p, err, mode)
			}
		}
		if link, err := os.Readlink(filepath.Join(dst, "lock.link")); err != nil || link != "lock" {
			t.Errorf("keep %v: lock.link: %q, %v", tt.keep, link, err)
		}
		if _, err := os.Lstat(filepath.Join(dst, "fifo")); err == nil {
			t.Errorf("keep %v: the fifo was copied", tt.keep)
		}
		if b, _ := os.ReadFile(filepath.Join(dst, "own", "config")); string(b) != tt.want {
			t.Errorf("keep %v: own/config holds %q, want %q", tt.keep, b, tt.want)
		}
	}
}
