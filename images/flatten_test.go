package images

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

func flatten(t *testing.T, dir string, layers ...[]byte) error {
	t.Helper()
	var rs []io.Reader
	for _, l := range layers {
		rs = append(rs, bytes.NewReader(l))
	}
	return flattenLayers(dir, rs...)
}

func TestFlatten(t *testing.T) {
	for _, tt := range []struct {
		name   string
		layers [][]ent
		want   map[string]string
	}{{
		name:   "files and directories",
		layers: [][]ent{{dir("etc"), file("etc/hostname", "box"), file("deep/er/f", "x")}},
		want:   map[string]string{"etc": "d", "etc/hostname": "f:box", "deep": "d", "deep/er": "d", "deep/er/f": "f:x"},
	}, {
		name:   "leading slash and dot",
		layers: [][]ent{{file("/abs", "a"), file("./rel", "r"), dir("./")}},
		want:   map[string]string{"abs": "f:a", "rel": "f:r"},
	}, {
		name:   "upper file replaces lower",
		layers: [][]ent{{file("f", "old")}, {file("f", "new")}},
		want:   map[string]string{"f": "f:new"},
	}, {
		name:   "whiteout deletes a file",
		layers: [][]ent{{file("a", "1"), file("b", "2")}, {file(".wh.a", "")}},
		want:   map[string]string{"b": "f:2"},
	}, {
		name:   "whiteout deletes a directory",
		layers: [][]ent{{file("d/x", "1"), file("d/y/z", "2")}, {file(".wh.d", "")}},
		want:   map[string]string{},
	}, {
		name:   "whiteout of nothing",
		layers: [][]ent{{file("a", "1")}, {file("no/such/.wh.x", "")}},
		want:   map[string]string{"a": "f:1"},
	}, {
		name: "opaque directory before its entries",
		layers: [][]ent{
			{file("d/x", "1"), file("d/sub/y", "2"), file("keep", "k")},
			{dir("d"), file("d/.wh..wh..opq", ""), file("d/z", "3")},
		},
		want: map[string]string{"d": "d", "d/z": "f:3", "keep": "f:k"},
	}, {
		name: "opaque directory after its entries",
		layers: [][]ent{
			{file("d/x", "1")},
			{dir("d"), file("d/z", "3"), file("d/.wh..wh..opq", "")},
		},
		want: map[string]string{"d": "d", "d/z": "f:3"},
	}, {
		name: "opaque directory hides lower content of its subdirectories",
		layers: [][]ent{
			{file("d/sub/old", "1")},
			{file("d/.wh..wh..opq", ""), file("d/sub/new", "2")},
		},
		want: map[string]string{"d": "d", "d/sub": "d", "d/sub/new": "f:2"},
	}, {
		name:   "opaque root",
		layers: [][]ent{{file("a", "1")}, {file(".wh..wh..opq", ""), file("b", "2")}},
		want:   map[string]string{"b": "f:2"},
	}, {
		name:   "aufs metadata ignored",
		layers: [][]ent{{file(".wh..wh.plnk/123", ""), file("a", "1")}},
		want:   map[string]string{"a": "f:1"},
	}, {
		name: "file replaces symlink instead of writing through it",
		layers: [][]ent{
			{file("target", "t"), symlink("link", "target")},
			{file("link", "new")},
		},
		want: map[string]string{"target": "f:t", "link": "f:new"},
	}, {
		name: "directory replaces symlink",
		layers: [][]ent{
			{dir("real"), symlink("link", "real")},
			{dir("link"), file("link/f", "x")},
		},
		want: map[string]string{"real": "d", "link": "d", "link/f": "f:x"},
	}, {
		name:   "file replaces directory",
		layers: [][]ent{{file("d/x", "1")}, {file("d", "now a file")}},
		want:   map[string]string{"d": "f:now a file"},
	}, {
		name:   "directory merges with directory",
		layers: [][]ent{{file("d/x", "1")}, {dir("d"), file("d/y", "2")}},
		want:   map[string]string{"d": "d", "d/x": "f:1", "d/y": "f:2"},
	}, {
		name: "relative symlink inside the root is followed for parents",
		layers: [][]ent{
			{dir("usr"), dir("usr/lib"), symlink("lib", "usr/lib")},
			{file("lib/libc.so", "c")},
		},
		want: map[string]string{"usr": "d", "usr/lib": "d", "usr/lib/libc.so": "f:c", "lib": "l:usr/lib"},
	}, {
		name: "absolute symlink directory is followed inside the root (Debian's var/run)",
		layers: [][]ent{
			{dir("run"), dir("var"), symlink("var/run", "/run")},
			{file("var/run/app.pid", "42")},
		},
		want: map[string]string{"run": "d", "run/app.pid": "f:42", "var": "d", "var/run": "l:/run"},
	}, {
		name: "merged /usr: lib -> usr/lib, a file and a hard link through it",
		layers: [][]ent{
			{dir("usr"), dir("usr/lib"), symlink("lib", "/usr/lib")},
			{file("lib/libfoo.so", "foo"), hardlink("lib/libfoo.so.1", "/lib/libfoo.so")},
		},
		want: map[string]string{"usr": "d", "usr/lib": "d", "usr/lib/libfoo.so": "f:foo", "usr/lib/libfoo.so.1": "f:foo", "lib": "l:/usr/lib"},
	}, {
		name: "symlink to a directory not made yet",
		layers: [][]ent{
			{symlink("lib", "/usr/lib")},
			{file("lib/x", "x")},
		},
		want: map[string]string{"usr": "d", "usr/lib": "d", "usr/lib/x": "f:x", "lib": "l:/usr/lib"},
	}, {
		name: "dot-dot in a symlink stops at the root",
		layers: [][]ent{
			{dir("a"), symlink("a/up", "../../../b")},
			{file("a/up/f", "x")},
		},
		want: map[string]string{"a": "d", "a/up": "l:../../../b", "b": "d", "b/f": "f:x"},
	}, {
		name: "chain of symlinks",
		layers: [][]ent{
			{symlink("x", "y/z"), symlink("y", "/w"), dir("w"), dir("w/z")},
			{file("x/f", "x")},
		},
		want: map[string]string{"x": "l:y/z", "y": "l:/w", "w": "d", "w/z": "d", "w/z/f": "f:x"},
	}, {
		name: "whiteout through a symlinked directory",
		layers: [][]ent{
			{dir("run"), file("run/old.pid", "1"), file("run/keep", "k"), symlink("var/run", "/run")},
			{file("var/run/.wh.old.pid", "")},
		},
		want: map[string]string{"run": "d", "run/keep": "f:k", "var": "d", "var/run": "l:/run"},
	}, {
		name: "opaque directory through a symlinked parent",
		layers: [][]ent{
			{file("usr/lib/d/old", "o"), symlink("lib", "usr/lib")},
			{dir("lib/d"), file("lib/d/.wh..wh..opq", ""), file("lib/d/new", "n")},
		},
		want: map[string]string{"usr": "d", "usr/lib": "d", "usr/lib/d": "d", "usr/lib/d/new": "f:n", "lib": "l:usr/lib"},
	}, {
		name: "a layer's own file through a symlink is above its whiteout",
		layers: [][]ent{
			{file("run/a", "old"), symlink("var/run", "/run")},
			{file("var/run/a", "new"), file("run/.wh.a", "")},
		},
		want: map[string]string{"run": "d", "run/a": "f:new", "var": "d", "var/run": "l:/run"},
	}, {
		name:   "dangling and absolute symlinks are kept as they are",
		layers: [][]ent{{symlink("abs", "/etc/passwd"), symlink("dangling", "nowhere"), symlink("up", "../../..")}},
		want:   map[string]string{"abs": "l:/etc/passwd", "dangling": "l:nowhere", "up": "l:../../.."},
	}, {
		name:   "hard links",
		layers: [][]ent{{file("a", "same"), hardlink("b", "a"), hardlink("/c", "/a")}},
		want:   map[string]string{"a": "f:same", "b": "f:same", "c": "f:same"},
	}, {
		name:   "hard link to a symlink links the symlink",
		layers: [][]ent{{symlink("s", "/etc/passwd"), hardlink("h", "s")}},
		want:   map[string]string{"s": "l:/etc/passwd", "h": "l:/etc/passwd"},
	}, {
		name:   "hard link to itself",
		layers: [][]ent{{file("a", "x")}, {hardlink("a", "a")}},
		want:   map[string]string{"a": "f:x"},
	}, {
		name:   "whiteout in a later layer keeps hard links",
		layers: [][]ent{{file("a", "x"), hardlink("b", "a")}, {file(".wh.a", "")}},
		want:   map[string]string{"b": "f:x"},
	}} {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			var layers [][]byte
			for _, l := range tt.layers {
				layers = append(layers, tarLayer(t, l...))
			}
			if err := flatten(t, root, layers...); err != nil {
				t.Fatalf("flattenLayers() = %v, want nil", err)
			}
			if d := diffTree(tree(t, root), tt.want); d != "" {
				t.Errorf("flattenLayers() tree differs:%s", d)
			}
		})
	}
}

func TestFlattenHardLinkIsSameFile(t *testing.T) {
	root := t.TempDir()
	if err := flatten(t, root, tarLayer(t, file("a", "x"), hardlink("b", "a"))); err != nil {
		t.Fatal(err)
	}
	a, _ := os.Stat(filepath.Join(root, "a"))
	b, _ := os.Stat(filepath.Join(root, "b"))
	if !os.SameFile(a, b) {
		t.Errorf("flattenLayers(): a and b are different files, want one inode")
	}
}

func TestFlattenMetadata(t *testing.T) {
	root := t.TempDir()
	layer := tarLayer(t,
		ent{name: "bin/su", body: "su", mode: 0o4755, uid: 0},
		ent{name: "ro", typ: tar.TypeDir, mode: 0o555},
		ent{name: "ro/f", body: "in a read-only dir", mode: 0o400, uid: 1234},
		ent{name: "x", body: "xattr", pax: map[string]string{
			"SCHILY.xattr.user.test":              "v",
			"SCHILY.xattr.trusted.overlay.opaque": "y",
		}},
		ent{name: "fifo", typ: tar.TypeFifo, mode: 0o600},
		ent{name: "null", typ: tar.TypeChar, mode: 0o666},
		symlink("sl", "x"),
	)
	if err := flatten(t, root, layer); err != nil {
		t.Fatalf("flattenLayers() = %v, want nil", err)
	}
	for _, tt := range []struct {
		name string
		mode os.FileMode
	}{
		{"bin/su", 0o755 | os.ModeSetuid},
		{"ro", 0o555 | os.ModeDir},
		{"ro/f", 0o400},
		{"fifo", 0o600 | os.ModeNamedPipe},
	} {
		fi, err := os.Lstat(filepath.Join(root, tt.name))
		if err != nil {
			t.Errorf("Lstat(%s) = %v", tt.name, err)
			continue
		}
		if fi.Mode() != tt.mode {
			t.Errorf("mode of %s = %v, want %v", tt.name, fi.Mode(), tt.mode)
		}
	}
	for _, name := range []string{"bin/su", "ro", "ro/f", "sl"} {
		fi, err := os.Lstat(filepath.Join(root, name))
		if err != nil {
			t.Fatal(err)
		}
		if !fi.ModTime().Equal(testTime) {
			t.Errorf("mtime of %s = %v, want %v", name, fi.ModTime(), testTime)
		}
	}
	if os.Geteuid() == 0 {
		fi, _ := os.Lstat(filepath.Join(root, "ro/f"))
		if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != 1234 {
			t.Errorf("owner of ro/f = %d, want 1234 (running as root)", uid)
		}
		if fi, err := os.Lstat(filepath.Join(root, "null")); err == nil && fi.Mode()&os.ModeCharDevice == 0 {
			t.Errorf("null is %v, want a character device (running as root)", fi.Mode())
		}
	}
	buf := make([]byte, 16)
	if n, err := unix.Lgetxattr(filepath.Join(root, "x"), "user.test", buf); err == nil && string(buf[:n]) != "v" {
		t.Errorf("xattr user.test of x = %q, want %q", buf[:n], "v")
	}
	if _, err := unix.Lgetxattr(filepath.Join(root, "x"), "trusted.overlay.opaque", buf); err == nil {
		t.Errorf("x has trusted.overlay.opaque, want it dropped")
	}
}

func TestFlattenCompressed(t *testing.T) {
	layer := tarLayer(t, file("f", "content"))
	var gz, zs bytes.Buffer
	gw := gzip.NewWriter(&gz)
	gw.Write(layer)
	gw.Close()
	zw, _ := zstd.NewWriter(&zs)
	zw.Write(layer)
	zw.Close()
	for name, b := range map[string][]byte{"tar": layer, "gzip": gz.Bytes(), "zstd": zs.Bytes()} {
		root := t.TempDir()
		if err := flatten(t, root, b); err != nil {
			t.Errorf("flattenLayers(%s) = %v, want nil", name, err)
			continue
		}
		if d := diffTree(tree(t, root), map[string]string{"f": "f:content"}); d != "" {
			t.Errorf("flattenLayers(%s) tree differs:%s", name, d)
		}
	}
}

// TestFlattenNeverOpensFIFOs checks that entries under a FIFO fail instead
// of blocking: opening a FIFO waits for a writer.
func TestFlattenNeverOpensFIFOs(t *testing.T) {
	fifo := ent{name: "f", typ: tar.TypeFifo, mode: 0o644}
	for _, l := range [][]ent{
		{fifo, hardlink("h", "f/x")},
		{fifo, symlink("s", "f"), hardlink("h", "s/x")},
		{fifo, file("f/x", "x")},
		{fifo, file("f/.wh.x", "")},
		{fifo, file("f/.wh..wh..opq", "")},
	} {
		done := make(chan error, 1)
		go func() { done <- flatten(t, t.TempDir(), tarLayer(t, l...)) }()
		select {
		case err := <-done:
			oneLineErr(t, err)
		case <-time.After(10 * time.Second):
			t.Fatalf("flattenLayers(%v) blocks", l)
		}
	}
}

func TestFlattenBadInput(t *testing.T) {
	root := t.TempDir()
	err := flattenLayers(root, strings.NewReader(strings.Repeat("not a tar archive ", 100)))
	if err == nil || strings.Contains(err.Error(), "\n") {
		t.Errorf("flattenLayers(garbage) = %v, want a one-line error", err)
	}
}

// TestFlattenUnsafe checks that malicious layers are refused with ErrUnsafe
// and that nothing outside the root changes. The "outside" directory
// stands for the host: symlinks point at it by absolute and relative path.
func TestFlattenUnsafe(t *testing.T) {
	for _, tt := range []struct {
		name   string
		layers func(outside string) [][]ent
		safe   bool // refused without ErrUnsafe, or accepted harmlessly
		// lands, for an entry through a symlink, is where in the root it
		// must land: the symlink followed as if the root were /.
		lands func(outside string) string
	}{{
		name:   "dot-dot escape",
		layers: func(string) [][]ent { return [][]ent{{file("../outside/new", "x")}} },
	}, {
		name:   "dot-dot escape in the middle",
		layers: func(string) [][]ent { return [][]ent{{file("a/../../outside/new", "x")}} },
	}, {
		name:   "dot-dot escape after a leading slash",
		layers: func(string) [][]ent { return [][]ent{{file("/../outside/new", "x")}} },
	}, {
		name: "write through an absolute symlink from a lower layer",
		layers: func(o string) [][]ent {
			return [][]ent{{symlink("evil", o)}, {file("evil/passwd", "x")}}
		},
		lands: func(o string) string { return o + "/passwd" },
	}, {
		name: "write through an absolute symlink in the same layer",
		layers: func(o string) [][]ent {
			return [][]ent{{symlink("evil", o), file("evil/passwd", "x")}}
		},
		lands: func(o string) string { return o + "/passwd" },
	}, {
		name: "write through a relative symlink leading out",
		layers: func(string) [][]ent {
			return [][]ent{{symlink("evil", "../outside"), file("evil/passwd", "x")}}
		},
		lands: func(o string) string { return "outside/passwd" },
	}, {
		name: "write through a chain of symlinks",
		layers: func(o string) [][]ent {
			return [][]ent{{symlink("a", "b"), symlink("b", o)}, {file("a/passwd", "x")}}
		},
		lands: func(o string) string { return o + "/passwd" },
	}, {
		name: "directory through a symlink",
		layers: func(o string) [][]ent {
			return [][]ent{{symlink("evil", o)}, {dir("evil/sub")}}
		},
		lands: func(o string) string { return o + "/sub" },
	}, {
		name: "symlink through a symlink",
		layers: func(o string) [][]ent {
			return [][]ent{{symlink("evil", o)}, {symlink("evil/link", "/")}}
		},
		lands: func(o string) string { return o + "/link" },
	}, {
		name:   "hard link to a host file",
		layers: func(string) [][]ent { return [][]ent{{hardlink("passwd", "/etc/passwd")}} },
	}, {
		// The target's directory is in the root, the file is not: the
		// host's /etc/passwd must not be linked.
		name:   "hard link to a host file whose directory the root has",
		layers: func(string) [][]ent { return [][]ent{{dir("etc"), hardlink("passwd", "/etc/passwd")}} },
	}, {
		name:   "hard link with dot-dot",
		layers: func(string) [][]ent { return [][]ent{{hardlink("s", "../outside/secret")}} },
	}, {
		name: "hard link through a symlink",
		layers: func(o string) [][]ent {
			return [][]ent{{symlink("evil", o), hardlink("s", "evil/secret")}}
		},
	}, {
		name: "hard link into a symlinked directory",
		layers: func(o string) [][]ent {
			return [][]ent{{file("f", "x"), symlink("evil", o), hardlink("evil/new", "f")}}
		},
		lands: func(o string) string { return o + "/new" },
	}, {
		name: "whiteout through a symlink",
		layers: func(o string) [][]ent {
			return [][]ent{{symlink("evil", o)}, {file("evil/.wh.secret", "")}}
		},
		safe: true,
	}, {
		name:   "whiteout of the parent",
		layers: func(string) [][]ent { return [][]ent{{file("a/.wh..", "")}} },
	}, {
		name: "opaque marker under a symlink replaces the symlink",
		layers: func(o string) [][]ent {
			return [][]ent{{symlink("evil", o)}, {file("evil/.wh..wh..opq", "")}}
		},
		safe: true,
	}, {
		name: "file replaces a symlink to outside",
		layers: func(o string) [][]ent {
			return [][]ent{{symlink("evil", o+"/secret")}, {file("evil", "x")}}
		},
		safe: true,
	}} {
		t.Run(tt.name, func(t *testing.T) {
			parent := t.TempDir()
			root := filepath.Join(parent, "root")
			outside := filepath.Join(parent, "outside")
			for _, d := range []string{root, outside} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o644); err != nil {
				t.Fatal(err)
			}
			before := tree(t, parent)
			delete(before, "root")
			var layers [][]byte
			for _, l := range tt.layers(outside) {
				layers = append(layers, tarLayer(t, l...))
			}
			err := flatten(t, root, layers...)
			switch {
			case tt.lands != nil:
				want := filepath.Join(root, tt.lands(outside))
				if _, lerr := os.Lstat(want); err != nil || lerr != nil {
					t.Errorf("flattenLayers() = %v, want the entry at %s (%v)", err, want, lerr)
				}
			case !tt.safe && !errors.Is(err, ErrUnsafe):
				t.Errorf("flattenLayers() = %v, want ErrUnsafe", err)
			case tt.safe && err != nil && errors.Is(err, ErrUnsafe):
				t.Errorf("flattenLayers() = %v, want no ErrUnsafe", err)
			}
			t.Log(err)
			if err != nil && strings.Contains(err.Error(), "\n") {
				t.Errorf("flattenLayers() = %q, want one line", err)
			}
			after := tree(t, parent)
			for k := range after {
				if k == "root" || strings.HasPrefix(k, "root/") {
					delete(after, k)
				}
			}
			if d := diffTree(after, before); d != "" {
				t.Errorf("flattenLayers() changed things outside the root:%s", d)
			}
		})
	}
}

func TestCleanName(t *testing.T) {
	for _, tt := range []struct {
		in, want string
		unsafe   bool
	}{
		{"a/b", "a/b", false},
		{"/a/b/", "a/b", false},
		{"./a/./b", "a/b", false},
		{"a/../b", "b", false},
		{"", ".", false},
		{"/", ".", false},
		{"//../x", "", true},
		{"..", "", true},
		{"../x", "", true},
		{"a/../../x", "", true},
	} {
		got, err := cleanName(tt.in)
		if tt.unsafe {
			if !errors.Is(err, ErrUnsafe) {
				t.Errorf("cleanName(%q) = %q, %v, want ErrUnsafe", tt.in, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("cleanName(%q) = %q, %v, want %q", tt.in, got, err, tt.want)
		}
	}
}

// TestFlattenUnprivileged flattens as a user who is not root (as nobody,
// when the test runs as root): modes that lock the owner out (0555
// directories, write-only files) are set only at the end, device nodes are
// skipped, and the root can still be removed.
func TestFlattenUnprivileged(t *testing.T) {
	dir := os.Getenv("IMAGES_TEST_UNPRIVILEGED")
	if dir == "" && os.Geteuid() == 0 {
		runAsNobody(t, "^TestFlattenUnprivileged$", "IMAGES_TEST_UNPRIVILEGED")
		return
	}
	if dir == "" {
		dir = t.TempDir()
	}
	root := filepath.Join(dir, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	err := flatten(t, root,
		tarLayer(t,
			ent{name: "ro", typ: tar.TypeDir, mode: 0o555},
			ent{name: "ro/sub", typ: tar.TypeDir, mode: 0o500},
			ent{name: "ro/sub/f", body: "x", mode: 0o200}, // 0 would mean the default
			ent{name: "dev/null", typ: tar.TypeChar, mode: 0o666, uid: 0},
			ent{name: "su", body: "su", mode: 0o4755},
		),
		tarLayer(t, file("ro/new", "added under a read-only directory of a lower layer")))
	if err != nil {
		t.Fatalf("flattenLayers() as uid %d = %v", os.Geteuid(), err)
	}
	for name, want := range map[string]os.FileMode{
		"ro":       0o555 | os.ModeDir,
		"ro/sub":   0o500 | os.ModeDir,
		"ro/sub/f": 0o200,
		"su":       0o755 | os.ModeSetuid,
	} {
		if fi, err := os.Lstat(filepath.Join(root, name)); err != nil || fi.Mode() != want {
			t.Errorf("mode of %s = %v, %v, want %v", name, fi.Mode(), err, want)
		}
	}
	if _, err := os.Lstat(filepath.Join(root, "dev/null")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dev/null made without root: %v", err)
	}
	if err := removeTree(root); err != nil {
		t.Errorf("removeTree(%s) = %v", root, err)
	}
}

// runAsNobody runs the test named by pattern in a copy of the test binary
// as uid and gid 65534, with env naming a directory nobody owns.
func runAsNobody(t *testing.T, pattern, env string) {
	t.Helper()
	top := t.TempDir()
	// t.TempDir's directories are 0700: let nobody in.
	for d := top; d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(top, "images.test")
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(top, "work")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(work, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run="+pattern, "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), env+"="+work)
	cmd.Dir = work
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS") {
		t.Errorf("%s as nobody: %v\n%s", pattern, err, out)
	}
}

func TestFlattenSymlinkLoop(t *testing.T) {
	for _, l := range [][]ent{
		{symlink("a", "a"), file("a/f", "x")},
		{symlink("a", "b"), symlink("b", "/a"), file("a/f", "x")},
		{symlink("a", "a"), hardlink("h", "a/f")},
		{symlink("a", "a"), file("a/.wh.f", "")},
	} {
		err := flatten(t, t.TempDir(), tarLayer(t, l...))
		if err == nil || !strings.Contains(err.Error(), "too many levels of symbolic links") || strings.Contains(err.Error(), "\n") {
			t.Errorf("flattenLayers(%v) = %v, want one line about too many levels of symbolic links", l, err)
		}
	}
}

// TestFlattenHardLinkToDirectory: a hard link to a directory is refused
// (not as unsafe: it names a path in the root) and makes nothing.
func TestFlattenHardLinkToDirectory(t *testing.T) {
	root := t.TempDir()
	err := flatten(t, root, tarLayer(t, dir("d"), hardlink("l", "d")))
	if err == nil || errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), `hard link target "d" is a directory`) {
		t.Errorf("flattenLayers() = %v, want the target refused as a directory", err)
	}
	if _, err := os.Lstat(filepath.Join(root, "l")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("l: %v, want it not made", err)
	}
}
