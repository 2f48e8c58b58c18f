// Package lru keeps a cache directory within a size budget: the entries
// used least recently go first. Owners of a cache mark an entry used each
// time they hand it out (Touch) and trim after adding one (Trim), the only
// moment a cache grows; what an entry is, and whether it may go now (a
// template slot another run holds may not), is theirs to say.
package lru

import (
	"os"
	"sort"
	"time"
)

// Entry is one file of a cache.
type Entry struct {
	Path string
	Size int64
	Used time.Time
}

// Stat reads the entries at paths; those gone meanwhile are left out.
func Stat(paths []string) []Entry {
	var entries []Entry
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil {
			entries = append(entries, Entry{Path: p, Size: fi.Size(), Used: fi.ModTime()})
		}
	}
	return entries
}

// Touch marks the entry at path used now. A file's modification time is
// the mark: reading a file does not change it, whatever the mount's atime
// options, and no entry is ever written in place.
func Touch(path string) {
	now := time.Now()
	os.Chtimes(path, now, now)
}

// Oldest are the entries to remove, least recently used first, so that the
// rest fit in budget bytes. The most recently used entry always stays, so
// a cache never evicts what it has just made.
func Oldest(entries []Entry, budget int64) []Entry {
	sorted := append([]Entry(nil), entries...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Used.After(sorted[j].Used) })
	var total int64
	for i, e := range sorted {
		total += e.Size
		if i > 0 && total > budget {
			return reverse(sorted[i:])
		}
	}
	return nil
}

func reverse(entries []Entry) []Entry {
	for i, j := 0, len(entries)-1; i < j; i, j = i+1, j-1 {
		entries[i], entries[j] = entries[j], entries[i]
	}
	return entries
}

// Trim removes the least recently used of the files at paths until the
// rest fit in budget bytes. remove is asked for each and may refuse (an
// entry in use now); what it leaves goes at a later trim.
func Trim(paths []string, budget int64, remove func(path string)) {
	for _, e := range Oldest(Stat(paths), budget) {
		remove(e.Path)
	}
}
