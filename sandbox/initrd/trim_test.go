package initrd

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestCachedTrims fills the cache beyond its budget with older initrds
// (sparse files): building a new one removes the least recently used
// until the rest fit, and a cache hit marks its initrd used.
func TestCachedTrims(t *testing.T) {
	in := newInputs(t, "a.ko")
	cache := t.TempDir()
	const n = 6
	for i := range n {
		p := filepath.Join(cache, fmt.Sprintf("initrd-old%d.cpio", i))
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		f.Truncate(cacheBudget / 4)
		f.Close()
		used := time.Now().Add(time.Duration(i-n) * time.Hour)
		os.Chtimes(p, used, used)
	}
	// A hit on the oldest makes it the most recent of the old ones.
	hit := filepath.Join(cache, "initrd-old0.cpio")
	now := time.Now().Add(-time.Minute)
	os.Chtimes(hit, now, now)

	res, err := Cached(cache, in.init, in.modules)
	if err != nil || !res.Built {
		t.Fatalf("Cached(%s) = %+v, %v, want Built", cache, res, err)
	}
	want := []string{filepath.Base(res.Path), "initrd-old0.cpio", "initrd-old4.cpio", "initrd-old5.cpio"}
	slices.Sort(want)
	if got := cacheFiles(t, cache); !slices.Equal(got, want) {
		t.Errorf("cache holds %q, want %q", got, want)
	}
}
