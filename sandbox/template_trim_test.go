package sandbox

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestTrimTemplates fills a template cache beyond its budget with sparse
// saved machines: the least recently used go, but not one a run holds.
func TestTrimTemplates(t *testing.T) {
	dir := t.TempDir()
	keys := []string{"a-oldest-held", "b-old", "c-recent", "d-newest"}
	for i, key := range keys {
		if err := os.MkdirAll(filepath.Join(dir, key), 0o700); err != nil {
			t.Fatal(err)
		}
		save := filepath.Join(dir, key, "slot-0.save")
		f, err := os.Create(save)
		if err != nil {
			t.Fatal(err)
		}
		f.Truncate(templateBudget / 2)
		f.Close()
		if err := os.WriteFile(filepath.Join(dir, key, "slot-0.lock"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		used := time.Now().Add(time.Duration(i-len(keys)) * time.Hour)
		os.Chtimes(save, used, used)
	}
	held, err := lockPath(filepath.Join(dir, keys[0], "slot-0.lock"), unix.LOCK_EX)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()

	trimTemplates(dir)

	saves, _ := filepath.Glob(filepath.Join(dir, "*", "slot-*.save"))
	var left []string
	for _, s := range saves {
		left = append(left, filepath.Base(filepath.Dir(s)))
	}
	if want := []string{"a-oldest-held", "c-recent", "d-newest"}; !reflect.DeepEqual(left, want) {
		t.Errorf("saved machines left: %v, want %v", left, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "b-old", "slot-0.lock")); err != nil {
		t.Errorf("the trimmed slot's lock file: %v", err)
	}
}
