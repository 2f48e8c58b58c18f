package images

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzFlatten builds layers of random entries from the input (names with
// "..", whiteouts, symlinks to outside, hard links) and checks that
// Flatten never panics and never changes anything outside the root. The
// root sits three directories deep in the test's temporary directory, with
// a sibling "outside", so that every ".." and every absolute symlink the
// fuzzer can make lands inside that directory, never on the host.
func FuzzFlatten(f *testing.F) {
	for _, seed := range [][]byte{
		{},
		{2, 4, 1, 0, 1, 4, 2},           // symlink evil -> outside, then a file under it
		{3, 0, 6, 0, 0},                 // hard link to a host file
		{0, 2, 2, 0, 7, 4, 4},           // a file named with ".."
		{1, 0, 5, 8, 0, 0, 9, 0, 0},     // directory, opaque, whiteout
		{2, 3, 0, 11, 6, 0, 4, 0, 0},    // symlink, new layer, write through it
		{2, 4, 2, 1, 3, 6, 0, 3, 4, 0},  // symlink into a relative escape
		{2, 0, 0, 11, 0, 1, 0, 1, 0},    // symlink a -> /a (a loop), a file under it
		{2, 0, 4, 14, 6, 0, 1, 4, 1, 1}, // symlink evil -> /, new layer, a file under it
		{2, 0, 0, 15, 3, 1, 0, 1, 7},    // symlink with ".." past the root, a hard link under it
		{2, 0, 4, 16, 4, 1, 4, 0, 0},    // symlink evil -> /d/../.., a whiteout under it
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		top := t.TempDir()
		parent := filepath.Join(top, "p1", "p2")
		root := filepath.Join(parent, "root")
		outside := filepath.Join(parent, "outside")
		for _, d := range []string{root, outside} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o644); err != nil {
			t.Fatal(err)
		}
		before := tree(t, top)

		layers := fuzzLayers(data, outside)
		var rs []io.Reader
		for _, l := range layers {
			rs = append(rs, bytes.NewReader(l))
		}
		err := flattenLayers(root, rs...)
		if err != nil && strings.ContainsAny(err.Error(), "\n") {
			t.Errorf("flattenLayers() = %q, want one line", err)
		}

		after := tree(t, top)
		for k := range after {
			if r, _ := filepath.Rel("p1/p2/root", k); !strings.HasPrefix(r, "..") {
				delete(after, k)
			}
		}
		delete(before, "p1/p2/root")
		if d := diffTree(after, before); d != "" {
			t.Fatalf("flattenLayers() changed things outside the root:%s", d)
		}
	})
}

// fuzzLayers decodes data into tar layers: each entry is an op byte and
// name, link and content bytes indexing small alphabets chosen to make
// escapes likely.
func fuzzLayers(data []byte, outside string) [][]byte {
	comps := []string{"a", "b", "..", ".", "evil", "", "c", ".wh.a", ".wh..wh..opq", ".wh.evil", ".wh..", "d"}
	links := []string{
		outside, outside + "/secret", "..", "../..", "../../..", "../outside",
		"/etc/passwd", "a", "a/b", "evil", "evil/secret", "/a", ".", "../root/a",
		"/", "b/../../../outside", "/d/../..",
	}
	next := func() int {
		if len(data) == 0 {
			return 0
		}
		b := data[0]
		data = data[1:]
		return int(b)
	}
	var layers [][]byte
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	flush := func() {
		tw.Close()
		layers = append(layers, append([]byte(nil), buf.Bytes()...))
		buf.Reset()
		tw = tar.NewWriter(&buf)
	}
	for n := 0; len(data) > 0 && n < 64; n++ {
		op := next() % 8
		if op == 6 {
			flush()
			continue
		}
		// A name of one to three components, maybe absolute.
		var parts []string
		k := next()
		for i := 0; i <= k%3; i++ {
			parts = append(parts, comps[next()%len(comps)])
		}
		name := strings.Join(parts, "/")
		if k&0x80 != 0 {
			name = "/" + name
		}
		h := &tar.Header{Name: name, Mode: 0o644, Typeflag: tar.TypeReg}
		body := ""
		switch op {
		case 0:
			body = strings.Repeat("x", next()%4)
		case 1:
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		case 2:
			h.Typeflag, h.Linkname = tar.TypeSymlink, links[next()%len(links)]
		case 3:
			h.Typeflag, h.Linkname = tar.TypeLink, links[next()%len(links)]
		case 4:
			h.Name = name[:strings.LastIndex(name, "/")+1] + ".wh." + comps[next()%len(comps)]
		case 5:
			h.Name = name + "/.wh..wh..opq"
		case 7:
			h.Typeflag = tar.TypeFifo
		}
		h.Size = int64(len(body))
		if tw.WriteHeader(h) == nil {
			tw.Write([]byte(body))
		}
	}
	flush()
	return layers
}
