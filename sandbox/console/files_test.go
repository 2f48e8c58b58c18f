package console

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFilesOnTheChannel runs a session whose host sends files after its
// hello, larger than a frame, and checks the guest extracts exactly them
// (modes, a nested directory, a symbolic link) and that the session then
// goes on as usual.
func TestFilesOnTheChannel(t *testing.T) {
	src := t.TempDir()
	big := bytes.Repeat([]byte("0123456789abcdef"), 3*MaxPayload/16+7)
	mustWrite(t, filepath.Join(src, "sandbox.json"), []byte(`{"name":"x"}`), 0o600)
	mustWrite(t, filepath.Join(src, "includes", "etc", "big"), big, 0o755)
	if err := os.Symlink("big", filepath.Join(src, "includes", "etc", "link")); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(src, "skeleton", "left-out"), nil, 0o644)

	var archive bytes.Buffer
	if err := WriteTree(&archive, src, "sandbox.json", "includes", "absent"); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	hc, gc := connPair(t)
	gerr := make(chan error, 1)
	go func() {
		g, err := Accept(gc)
		if err != nil {
			gerr <- err
			return
		}
		root, err := os.OpenRoot(dst)
		if err != nil {
			gerr <- err
			return
		}
		defer root.Close()
		if err := ExtractTree(g.Files(), root); err != nil {
			gerr <- err
			return
		}
		gerr <- g.Fail(&Failed{Status: 125, Message: "done"})
	}()
	h := &Host{Files: &archive}
	hr := within(t, "Host.Run", func() hostResult {
		st, err := h.Run(hc)
		return hostResult{st, err}
	})
	if err := within(t, "the guest", func() error { return <-gerr }); err != nil {
		t.Fatalf("guest: %v", err)
	}
	var f *Failed
	if !errors.As(hr.err, &f) || f.Message != "done" {
		t.Fatalf("Run() = %v, want the guest's failure after the files", hr.err)
	}
	for _, c := range []struct {
		name    string
		content []byte
		mode    os.FileMode
	}{
		{"sandbox.json", []byte(`{"name":"x"}`), 0o600},
		{"includes/etc/big", big, 0o755},
	} {
		got, err := os.ReadFile(filepath.Join(dst, c.name))
		if err != nil || !bytes.Equal(got, c.content) {
			t.Errorf("%s: %d bytes, %v; want %d bytes", c.name, len(got), err, len(c.content))
		}
		if fi, err := os.Stat(filepath.Join(dst, c.name)); err == nil && fi.Mode().Perm() != c.mode {
			t.Errorf("%s: mode %v, want %v", c.name, fi.Mode().Perm(), c.mode)
		}
	}
	if link, err := os.Readlink(filepath.Join(dst, "includes/etc/link")); err != nil || link != "big" {
		t.Errorf("includes/etc/link = %q, %v; want a link to big", link, err)
	}
	for _, absent := range []string{"skeleton", "absent"} {
		if _, err := os.Lstat(filepath.Join(dst, absent)); err == nil {
			t.Errorf("%s was sent, though not asked for", absent)
		}
	}
}

// TestExtractTreeRefuses checks that entries that would land outside the
// destination, or are not files, are refused and nothing is written
// outside.
func TestExtractTreeRefuses(t *testing.T) {
	for _, tt := range []struct {
		name string
		hdr  tar.Header
	}{
		{"parent", tar.Header{Name: "../escape", Typeflag: tar.TypeReg, Mode: 0o644}},
		{"absolute", tar.Header{Name: "/escape", Typeflag: tar.TypeReg, Mode: 0o644}},
		{"through a link", tar.Header{Name: "up/escape", Typeflag: tar.TypeReg, Mode: 0o644}},
		{"device", tar.Header{Name: "dev", Typeflag: tar.TypeChar, Mode: 0o644}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			parent := t.TempDir()
			dst := filepath.Join(parent, "dst")
			if err := os.Mkdir(dst, 0o755); err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			tw := tar.NewWriter(&b)
			tw.WriteHeader(&tar.Header{Name: "up", Typeflag: tar.TypeSymlink, Linkname: "..", Mode: 0o777})
			tw.WriteHeader(&tt.hdr)
			tw.Close()
			root, err := os.OpenRoot(dst)
			if err != nil {
				t.Fatal(err)
			}
			defer root.Close()
			err = ExtractTree(&b, root)
			if err == nil || !strings.Contains(err.Error(), "the run's files") {
				t.Errorf("ExtractTree() = %v, want a refusal", err)
			}
			if _, err := os.Lstat(filepath.Join(parent, "escape")); err == nil {
				t.Errorf("an entry landed outside the destination")
			}
		})
	}
}

func mustWrite(t *testing.T, path string, b []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, mode)
}
