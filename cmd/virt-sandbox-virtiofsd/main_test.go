package main

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
)

func TestSourceOption(t *testing.T) {
	for _, tt := range []struct {
		args    []string
		i       int
		source  string
		rewrite string
	}{
		{[]string{"--fd=3", "-o", "source=/,xattr,cache=none"}, 2, "/", "source=" + exportDir + ",xattr,cache=none"},
		{[]string{"--fd=3", "-o", "xattr,source=/a,,b,cache=none"}, 2, "/a,b", "xattr,source=" + exportDir + ",cache=none"},
		{[]string{"--print-capabilities"}, -1, "", ""},
		{[]string{"-o", "xattr"}, -1, "", ""},
	} {
		i, source := sourceOption(tt.args)
		if i != tt.i || source != tt.source {
			t.Errorf("sourceOption(%q) = %d, %q; want %d, %q", tt.args, i, source, tt.i, tt.source)
			continue
		}
		if i >= 0 {
			if got := setOption(tt.args[i], "source", exportDir); got != tt.rewrite {
				t.Errorf("setOption(%q) = %q; want %q", tt.args[i], got, tt.rewrite)
			}
		}
	}
}

func TestSplitOptions(t *testing.T) {
	if got, want := splitOptions("a,,b,c"), []string{"a,b", "c"}; !slices.Equal(got, want) {
		t.Errorf("splitOptions = %q; want %q", got, want)
	}
}

// TestReadOnlyClone checks what virtiofsd is given: the source's tree,
// refusing every write with EROFS also to root, in a namespace that does
// not reach the host's.
func TestReadOnlyClone(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root, as libvirt runs it")
	}
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("host"), 0o644); err != nil {
		t.Fatal(err)
	}
	type result struct {
		read        string
		write, mkdr error
		err         error
	}
	done := make(chan result)
	go func() {
		// The thread keeps its namespace and ends with this goroutine
		// (it stays locked).
		var r result
		if r.err = readOnlyClone(src); r.err == nil {
			b, _ := os.ReadFile(filepath.Join(exportDir, "f"))
			r.read = string(b)
			r.write = os.WriteFile(filepath.Join(exportDir, "f"), []byte("guest"), 0o644)
			r.mkdr = os.Mkdir(filepath.Join(exportDir, "d"), 0o755)
		}
		done <- r
	}()
	r := <-done
	if r.err != nil {
		t.Fatalf("readOnlyClone: %v", r.err)
	}
	if r.read != "host" {
		t.Errorf("the export reads %q; want the source's %q", r.read, "host")
	}
	if !errors.Is(r.write, syscall.EROFS) || !errors.Is(r.mkdr, syscall.EROFS) {
		t.Errorf("writing the export: %v, mkdir: %v; want EROFS for both", r.write, r.mkdr)
	}
	if b, _ := os.ReadFile(filepath.Join(src, "f")); string(b) != "host" {
		t.Errorf("the source now holds %q", b)
	}
	if _, err := os.Stat(exportDir); err == nil {
		t.Errorf("%s shows in the host's namespace", exportDir)
	}
	if err := os.WriteFile(filepath.Join(src, "g"), nil, 0o644); err != nil {
		t.Errorf("the source is no longer writable on the host: %v", err)
	}
}
