package config

import (
	"errors"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/virt-sandbox/virt-sandbox/config/guest"
)

// TestSaveWhole: a Save that cannot be written to its end (here the file
// size limit stands for a full disk) leaves the config it would replace
// as it was, and no temporary file; a Save that works replaces it.
func TestSaveWhole(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, guest.ConfigFile)
	old := &Sandbox{Name: "old", Command: Command{Argv: []string{"/bin/true"}}}
	if err := old.Save(p, nil); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(p)

	big := &Sandbox{Name: "big", Command: Command{Argv: []string{"/bin/true"}, Env: []string{"X=" + strings.Repeat("x", 1<<20)}}}
	signal.Ignore(syscall.SIGXFSZ)
	defer signal.Reset(syscall.SIGXFSZ)
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err)
	}
	small := lim
	small.Cur = 64 << 10
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &small); err != nil {
		t.Fatal(err)
	}
	err := big.Save(p, nil)
	syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim)
	if !errors.Is(err, syscall.EFBIG) || !strings.HasPrefix(err.Error(), "write "+p+": ") {
		t.Errorf("Save() beyond the size limit = %v, want a write error naming %s", err, p)
	}
	if after, _ := os.ReadFile(p); string(after) != string(before) {
		t.Errorf("a failed Save changed %s", p)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("%s holds %d files, want the config only", dir, len(ents))
	}

	if err := big.Save(p, nil); err != nil {
		t.Fatal(err)
	}
	got, err := Load(p)
	if err != nil || got.Name != "big" {
		t.Errorf("Load() after Save() = %+v, %v", got, err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o644 {
		t.Errorf("%s has mode %v, want 0644", p, fi.Mode().Perm())
	}
}
