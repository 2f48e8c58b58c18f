package kmod

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

var codecs = []struct {
	suffix string
	writer func(io.Writer) (io.WriteCloser, error)
}{
	{".ko", func(w io.Writer) (io.WriteCloser, error) { return nopCloser{w}, nil }},
	{".ko.gz", func(w io.Writer) (io.WriteCloser, error) { return gzip.NewWriter(w), nil }},
	{".ko.xz", func(w io.Writer) (io.WriteCloser, error) { return xz.NewWriter(w) }},
	{".ko.zst", func(w io.Writer) (io.WriteCloser, error) { return zstd.NewWriter(w) }},
}

// writeModule writes image to dir/name+suffix, compressed by codec.
func writeModule(t *testing.T, dir, name string, codec int, image []byte) string {
	t.Helper()
	var buf bytes.Buffer
	w, err := codecs[codec].writer(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(image); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name+codecs[codec].suffix)
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadModule(t *testing.T) {
	image := append([]byte("\x7fELF\x02\x01\x01"), bytes.Repeat([]byte("fake module "), 10000)...)
	dir := t.TempDir()
	for i, c := range codecs {
		for _, img := range [][]byte{image, {}} {
			p := writeModule(t, dir, "virtio-blk", i, img)
			got, err := ReadModule(p)
			if err != nil || !bytes.Equal(got, img) {
				t.Errorf("ReadModule(%s) = %d bytes, %v, want %d bytes", c.suffix, len(got), err, len(img))
			}
		}
	}
}

func TestReadModuleTooLarge(t *testing.T) {
	defer func(old int64) { maxImageSize = old }(maxImageSize)
	maxImageSize = 1 << 20
	dir := t.TempDir()
	for i, c := range codecs {
		p := writeModule(t, dir, "exact", i, make([]byte, maxImageSize))
		if got, err := ReadModule(p); err != nil || int64(len(got)) != maxImageSize {
			t.Errorf("ReadModule(%s of the limit) = %d bytes, %v, want %d bytes", c.suffix, len(got), err, maxImageSize)
		}
		p = writeModule(t, dir, "big", i, make([]byte, maxImageSize+1))
		got, err := ReadModule(p)
		if want := "kmod: big: module image larger than 1 MiB"; err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("ReadModule(%s over the limit) = %d bytes, %v, want error %q", c.suffix, len(got), err, want)
		}
	}
}

func TestReadModuleErrors(t *testing.T) {
	dir := t.TempDir()
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write(bytes.Repeat([]byte("truncated"), 1000))
	w.Close()
	for _, tt := range []struct {
		file, content string
	}{
		{"garbage.ko.gz", "not gzip"},
		{"garbage.ko.xz", "not xz"},
		{"garbage.ko.zst", "not zstd"},
		{"truncated.ko.gz", gz.String()[:gz.Len()/2]},
		{"empty.ko.gz", ""},
		{"empty.ko.xz", ""},
	} {
		p := filepath.Join(dir, tt.file)
		if err := os.WriteFile(p, []byte(tt.content), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := ReadModule(p)
		if want := "kmod: " + Name(tt.file) + ": "; err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("ReadModule(%s) = %d bytes, %v, want error starting %q", tt.file, len(got), err, want)
		}
	}

	if _, err := ReadModule(filepath.Join(dir, "missing.ko")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadModule(missing.ko) = %v, want %v", err, fs.ErrNotExist)
	}
}
