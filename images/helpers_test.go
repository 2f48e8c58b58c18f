package images

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/klauspost/compress/gzip"
)

// ent is one tar entry of a test layer.
type ent struct {
	name string
	typ  byte   // tar.TypeReg when 0
	body string // content of a regular file
	link string // target of a symlink or hard link
	mode int64  // 0644 (files) or 0755 (directories) when 0
	uid  int
	pax  map[string]string
}

var testTime = time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)

// tarLayer writes ents as an uncompressed tar layer.
func tarLayer(t testing.TB, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := &tar.Header{
			Name:       e.name,
			Typeflag:   e.typ,
			Linkname:   e.link,
			Mode:       e.mode,
			Uid:        e.uid,
			Gid:        e.uid,
			ModTime:    testTime,
			PAXRecords: e.pax,
			Format:     tar.FormatPAX,
		}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("WriteHeader(%q) = %v", e.name, err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func dir(name string) ent             { return ent{name: name, typ: tar.TypeDir} }
func file(name, body string) ent      { return ent{name: name, body: body} }
func symlink(name, target string) ent { return ent{name: name, typ: tar.TypeSymlink, link: target} }
func hardlink(name, target string) ent {
	return ent{name: name, typ: tar.TypeLink, link: target}
}

// tree describes a directory: "d" for a directory, "l:TARGET" for a
// symlink, "f:CONTENT" for a regular file.
func tree(t testing.TB, root string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		switch {
		case d.IsDir():
			m[rel] = "d"
		case d.Type()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			m[rel] = "l:" + l
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			m[rel] = "f:" + string(b)
		default:
			m[rel] = "?" + d.Type().String()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", root, err)
	}
	return m
}

func diffTree(got, want map[string]string) string {
	var keys []string
	seen := map[string]bool{}
	for k := range got {
		keys, seen[k] = append(keys, k), true
	}
	for k := range want {
		if !seen[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		if got[k] != want[k] {
			b.WriteString("\n\t" + k + ": got " + quoteOrNone(got, k) + ", want " + quoteOrNone(want, k))
		}
	}
	return b.String()
}

func quoteOrNone(m map[string]string, k string) string {
	if v, ok := m[k]; ok {
		return "\"" + v + "\""
	}
	return "nothing"
}

func layoutWrite(dir string) (layout.Path, error) { return layout.Write(dir, empty.Index) }

func layoutAnnotations(ref string) layout.Option {
	return layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": ref})
}

// tarDir writes the files and directories under dir to a tar archive.
func tarDir(t testing.TB, dir, out string) {
	t.Helper()
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		h, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			_, err = tw.Write(b)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

func compressFile(t testing.TB, in, out string) {
	t.Helper()
	b, err := os.ReadFile(in)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// pullRoot pulls ref into s and flattens it.
func pullRoot(t *testing.T, s *Store, ref string) (*Image, string) {
	t.Helper()
	img, err := s.Pull(context.Background(), ref, PullOptions{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	root, err := s.RootFS(img)
	if err != nil {
		t.Fatal(err)
	}
	return img, root
}

// flattenLayers applies tar layers, lowest first, to dir, as overlayfs would
// show them stacked: ".wh.NAME" deletes NAME of lower layers,
// ".wh..wh..opq" hides a directory's lower content. Layers may be
// uncompressed, gzip or zstd. Owners are set and device nodes made only
// when running as root. Symlinks on the way to an entry are followed as if
// dir were / (lib -> /usr/lib takes lib/libfoo.so to usr/lib/libfoo.so),
// as containerd and umoci do. Nothing is ever written outside dir: an
// entry that would be is refused with an error wrapping ErrUnsafe.
func flattenLayers(dir string, layers ...io.Reader) error {
	a, err := newApplier(dir)
	if err != nil {
		return fmt.Errorf("flatten %s: %w", dir, err)
	}
	defer a.close()
	for i, l := range layers {
		if err := a.applyCompressed(l); err != nil {
			return fmt.Errorf("flatten %s: layer %d: %w", dir, i+1, oneLine(err))
		}
	}
	if err := a.finish(); err != nil {
		return fmt.Errorf("flatten %s: %w", dir, err)
	}
	return nil
}
