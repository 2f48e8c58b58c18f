package lru

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func TestOldest(t *testing.T) {
	at := func(min int) time.Time { return time.Date(2026, 11, 30, 0, min, 0, 0, time.UTC) }
	entries := []Entry{
		{Path: "a", Size: 10, Used: at(1)},
		{Path: "b", Size: 10, Used: at(3)},
		{Path: "c", Size: 10, Used: at(2)},
		{Path: "d", Size: 10, Used: at(4)},
	}
	for _, tc := range []struct {
		name   string
		in     []Entry
		budget int64
		want   []string
	}{
		{"all fit", entries, 40, nil},
		{"one too many", entries, 39, []string{"a"}},
		{"oldest first", entries, 20, []string{"a", "c"}},
		{"the newest stays over budget", entries, 5, []string{"a", "c", "b"}},
		{"empty", nil, 0, nil},
		{"a big newer entry pushes out the rest", []Entry{
			{Path: "small", Size: 1, Used: at(1)},
			{Path: "big", Size: 100, Used: at(2)},
			{Path: "new", Size: 1, Used: at(3)},
		}, 50, []string{"small", "big"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, e := range Oldest(tc.in, tc.budget) {
				got = append(got, e.Path)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Oldest(budget %d) = %v, want %v", tc.budget, got, tc.want)
			}
		})
	}
}

// TestTrim trims a real directory: the file touched last stays, the
// one remove refuses stays, the others go.
func TestTrim(t *testing.T) {
	dir := t.TempDir()
	var paths []string
	for i, name := range []string{"old", "held", "recent", "touched"} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, make([]byte, 100), 0o644); err != nil {
			t.Fatal(err)
		}
		past := time.Now().Add(time.Duration(i-10) * time.Minute)
		os.Chtimes(p, past, past)
		paths = append(paths, p)
	}
	// "touched" is the oldest until it is used.
	old := time.Now().Add(-time.Hour)
	os.Chtimes(paths[3], old, old)
	Touch(paths[3])
	Trim(paths, 150, func(p string) {
		if filepath.Base(p) != "held" {
			os.Remove(p)
		}
	})
	var left []string
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			left = append(left, filepath.Base(p))
		}
	}
	if want := []string{"held", "touched"}; !reflect.DeepEqual(left, want) {
		t.Errorf("left %v, want %v", left, want)
	}
}
