package sandbox

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckPrivate(t *testing.T) {
	base := t.TempDir()
	mk := func(name string, mode os.FileMode) string {
		p := filepath.Join(base, name)
		if err := os.Mkdir(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	private := mk("private", 0o700)
	readable := mk("readable", 0o755)
	open := mk("open", 0o777)
	link := filepath.Join(base, "link")
	if err := os.Symlink(private, link); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := map[string]bool{private: true, readable: true, open: false, link: false, file: false}
	if os.Geteuid() == 0 {
		other := mk("other", 0o700)
		if err := os.Chown(other, 1, 1); err != nil {
			t.Fatal(err)
		}
		cases[other] = false
	}
	for dir, ok := range cases {
		err := checkPrivate(dir)
		if (err == nil) != ok {
			t.Errorf("checkPrivate(%s) = %v, want ok %v", filepath.Base(dir), err, ok)
		}
		if err != nil && (!strings.Contains(err.Error(), "not a private directory of yours") || strings.Contains(err.Error(), "\n")) {
			t.Errorf("checkPrivate(%s) = %q, want one line saying it is not a private directory", filepath.Base(dir), err)
		}
	}
}
