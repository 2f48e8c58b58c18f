package images

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// testRegistry is an in-process registry. corrupt, when set to a digest,
// makes it serve that blob with one byte changed.
type testRegistry struct {
	host     string
	corrupt  atomic.Value // string
	blobGets atomic.Int64
}

func newRegistry(t *testing.T) *testRegistry {
	t.Helper()
	r := &testRegistry{}
	r.corrupt.Store("")
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/sha256:") {
			r.blobGets.Add(1)
			if bad := r.corrupt.Load().(string); bad != "" && strings.HasSuffix(req.URL.Path, "/blobs/"+bad) {
				rec := httptest.NewRecorder()
				reg.ServeHTTP(rec, req)
				b := rec.Body.Bytes()
				if len(b) > 0 {
					b[len(b)/2] ^= 0xff
				}
				w.Header().Set("Content-Length", fmt.Sprint(len(b)))
				w.WriteHeader(rec.Code)
				w.Write(b)
				return
			}
		}
		reg.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	r.host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

// reference is repo:tag in the registry, as text and parsed.
func (r *testRegistry) reference(t *testing.T, repoTag string) (string, name.Reference) {
	t.Helper()
	ref := r.host + "/" + repoTag
	nr, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return ref, nr
}

// push stores img in the registry as repo:tag and returns the reference.
func (r *testRegistry) push(t *testing.T, repoTag string, img v1.Image) string {
	t.Helper()
	ref, nr := r.reference(t, repoTag)
	if err := remote.Write(nr, img); err != nil {
		t.Fatalf("remote.Write(%s) = %v", ref, err)
	}
	return ref
}

// layer makes a gzip-compressed layer of ents.
func layer(t *testing.T, ents ...ent) v1.Layer {
	t.Helper()
	b := tarLayer(t, ents...)
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

var testConfig = v1.Config{
	Entrypoint: []string{"/bin/sh", "-c"},
	Cmd:        []string{"echo hi"},
	Env:        []string{"PATH=/bin", "OPTS=a=b=c"},
	WorkingDir: "/work",
	User:       "1000:1000",
}

// image makes a linux image of the host's architecture (or arch) of layers.
func image(t *testing.T, arch string, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	cf.Config = testConfig
	cf.Created = v1.Time{Time: testTime}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func openStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatalf("Open() = %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func digestOf(t *testing.T, img v1.Image) string {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// checkStore checks the store's invariants: every blob hashes to its name,
// every record's manifest, config and layers are there, tmp is empty.
func checkStore(t *testing.T, s *Store) {
	t.Helper()
	blobs, err := os.ReadDir(filepath.Join(s.Dir, "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range blobs {
		data, err := os.ReadFile(filepath.Join(s.Dir, "blobs", "sha256", b.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != b.Name() {
			t.Errorf("blob %s hashes to %x", b.Name(), sum)
		}
	}
	imgs, err := s.List()
	if err != nil {
		t.Fatalf("List() = %v", err)
	}
	for _, img := range imgs {
		f, err := os.Open(s.blobPath(img.Digest))
		if err != nil {
			t.Errorf("image %s: manifest: %v", img.Ref, err)
			continue
		}
		m, err := v1.ParseManifest(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
			if !s.haveBlob(d.Digest.String(), d.Size) {
				t.Errorf("image %s: blob %s missing", img.Ref, d.Digest)
			}
		}
	}
	if tmp, _ := os.ReadDir(filepath.Join(s.Dir, "tmp")); len(tmp) != 0 {
		t.Errorf("tmp holds %d leftovers, want none", len(tmp))
	}
}

func oneLineErr(t *testing.T, err error) {
	t.Helper()
	if err != nil && strings.ContainsAny(err.Error(), "\n\r") {
		t.Errorf("error %q is not one line", err)
	}
}

func TestPull(t *testing.T) {
	reg := newRegistry(t)
	want := image(t, runtime.GOARCH,
		layer(t, dir("etc"), file("etc/hostname", "box"), file("bin/sh", "#!")),
		layer(t, file("etc/.wh.hostname", ""), file("etc/os-release", "test")))
	ref := reg.push(t, "t/img:1", want)
	s := openStore(t)
	var progress bytes.Buffer
	img, err := s.Pull(context.Background(), ref, PullOptions{Insecure: true, Progress: &progress})
	if err != nil {
		t.Fatalf("Pull(%s) = %v", ref, err)
	}
	if img.Ref != ref {
		t.Errorf("Pull(%s).Ref = %s, want %s", ref, img.Ref, ref)
	}
	if d := digestOf(t, want); img.Digest != d {
		t.Errorf("Pull(%s).Digest = %s, want %s", ref, img.Digest, d)
	}
	if got := fmt.Sprint(img.Config); got != fmt.Sprint(testConfig2()) {
		t.Errorf("Pull(%s).Config = %s, want %s", ref, got, fmt.Sprint(testConfig2()))
	}
	if p := "linux/" + runtime.GOARCH; img.Platform != p {
		t.Errorf("Pull(%s).Platform = %s, want %s", ref, img.Platform, p)
	}
	if !img.Created.Equal(testTime) {
		t.Errorf("Pull(%s).Created = %v, want %v", ref, img.Created, testTime)
	}
	m, _ := want.Manifest()
	var size int64
	for _, l := range m.Layers {
		size += l.Size
	}
	if img.Size != size {
		t.Errorf("Pull(%s).Size = %d, want %d", ref, img.Size, size)
	}
	out := progress.String()
	if strings.Count(out, "pulling ") != 2 || strings.Count(out, "done ") != 2 {
		t.Errorf("Pull(%s) progress = %q, want two pulling and two done lines", ref, out)
	}

	// Get, by every name.
	for _, q := range []string{ref, img.Digest, img.Digest[:19], strings.TrimPrefix(img.Digest, "sha256:")[:8]} {
		got, err := s.Get(q)
		if err != nil || got.Digest != img.Digest || got.Ref != ref {
			t.Errorf("Get(%s) = %+v, %v, want %s", q, got, err, img.Digest)
		}
	}
	byDigest := reg.host + "/t/img@" + img.Digest
	if got, err := s.Get(byDigest); err != nil || got.Ref != ref {
		t.Errorf("Get(%s) = %+v, %v, want %s", byDigest, got, err, ref)
	}
	if _, err := s.Get(reg.host + "/t/other@" + img.Digest); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(other repository@digest) = %v, want ErrNotFound", err)
	}
	if _, err := s.Get(reg.host + "/t/img:2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(other tag) = %v, want ErrNotFound", err)
	}

	root, err := s.RootFS(img)
	if err != nil {
		t.Fatalf("RootFS() = %v", err)
	}
	wantTree := map[string]string{"etc": "d", "etc/os-release": "f:test", "bin": "d", "bin/sh": "f:#!"}
	if d := diffTree(tree(t, root), wantTree); d != "" {
		t.Errorf("RootFS() tree differs:%s", d)
	}
	if fi, err := os.Stat(root); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("RootFS() mode = %v, %v, want 0755", fi.Mode(), err)
	}
	// Local users must not reach the image's setuid programs.
	if fi, err := os.Stat(filepath.Dir(root)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("mode of %s = %v, %v, want 0700", filepath.Dir(root), fi.Mode(), err)
	}
	checkStore(t, s)

	// A second pull fetches no blob.
	gets := reg.blobGets.Load()
	if _, err := s.Pull(context.Background(), ref, PullOptions{Insecure: true}); err != nil {
		t.Fatalf("second Pull(%s) = %v", ref, err)
	}
	if n := reg.blobGets.Load() - gets; n != 0 {
		t.Errorf("second Pull(%s) fetched %d blobs, want 0", ref, n)
	}
}

func TestPullProgressTerminal(t *testing.T) {
	reg := newRegistry(t)
	ref := reg.push(t, "t/tty:1", image(t, runtime.GOARCH, layer(t, file("f", strings.Repeat("z", 50000)))))
	ptm, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer ptm.Close()
	var out bytes.Buffer
	read := make(chan struct{})
	go func() {
		io.Copy(&out, ptm) // ends when tty closes (EIO)
		close(read)
	}()
	s := openStore(t)
	_, err = s.Pull(context.Background(), ref, PullOptions{Insecure: true, Progress: tty})
	tty.Close()
	<-read
	if err != nil {
		t.Fatalf("Pull(%s) = %v", ref, err)
	}
	got := out.String()
	if !strings.Contains(got, "100%") || strings.Contains(got, "pulling ") {
		t.Errorf("Pull(%s) progress on a terminal = %q, want a bar", ref, got)
	}
}

// testConfig2 is testConfig as Config.
func testConfig2() Config {
	return Config{
		Entrypoint: testConfig.Entrypoint,
		Cmd:        testConfig.Cmd,
		Env:        testConfig.Env,
		WorkingDir: testConfig.WorkingDir,
		User:       testConfig.User,
	}
}

func TestPullDefaultsDockerHub(t *testing.T) {
	// No network: only the normalization that Get shares with Pull.
	s := openStore(t)
	img := &Image{Ref: "index.docker.io/library/busybox:latest", Digest: "sha256:" + strings.Repeat("ab", 32)}
	if err := s.writeRef(img); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"busybox", "busybox:latest", "docker.io/busybox", "docker.io/library/busybox:latest"} {
		if got, err := s.Get(q); err != nil || got.Ref != img.Ref {
			t.Errorf("Get(%s) = %v, %v, want %s", q, got, err, img.Ref)
		}
	}
}

func TestPullSharedLayers(t *testing.T) {
	reg := newRegistry(t)
	base := layer(t, file("bin/busybox", "bb"))
	refA := reg.push(t, "t/a:1", image(t, runtime.GOARCH, base, layer(t, file("a", "a"))))
	refB := reg.push(t, "t/b:1", image(t, runtime.GOARCH, base, layer(t, file("b", "b"))))
	s := openStore(t)
	if _, err := s.Pull(context.Background(), refA, PullOptions{Insecure: true}); err != nil {
		t.Fatal(err)
	}
	var progress bytes.Buffer
	if _, err := s.Pull(context.Background(), refB, PullOptions{Insecure: true, Progress: &progress}); err != nil {
		t.Fatal(err)
	}
	d, _ := base.Digest()
	if !strings.Contains(progress.String(), "cached "+ShortDigest(d.String())) {
		t.Errorf("Pull(%s) progress = %q, want the shared layer cached", refB, progress.String())
	}
	// 2 manifests + 2 configs + 3 layers.
	if blobs, _ := os.ReadDir(filepath.Join(s.Dir, "blobs", "sha256")); len(blobs) != 7 {
		t.Errorf("store holds %d blobs, want 7", len(blobs))
	}
	checkStore(t, s)
}

func TestPullIndex(t *testing.T) {
	reg := newRegistry(t)
	other := "s390x"
	if runtime.GOARCH == other {
		other = "amd64"
	}
	host := image(t, runtime.GOARCH, layer(t, file("arch", runtime.GOARCH)))
	foreign := image(t, other, layer(t, file("arch", other)))
	for _, mt := range []types.MediaType{types.OCIImageIndex, types.DockerManifestList} {
		t.Run(string(mt), func(t *testing.T) {
			idx := mutate.IndexMediaType(empty.Index, mt)
			idx = mutate.AppendManifests(idx,
				mutate.IndexAddendum{Add: foreign, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: other}}},
				mutate.IndexAddendum{Add: host, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}}},
			)
			ref := reg.host + "/t/multi:" + strings.ReplaceAll(string(mt), "/", "_")[:20]
			r, err := name.ParseReference(ref, name.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			if err := remote.WriteIndex(r, idx); err != nil {
				t.Fatal(err)
			}
			s := openStore(t)
			for _, tt := range []struct {
				platform string
				want     v1.Image
				arch     string
			}{
				{"", host, runtime.GOARCH},
				{"linux/" + other, foreign, other},
				{"linux/" + runtime.GOARCH, host, runtime.GOARCH},
			} {
				img, err := s.Pull(context.Background(), ref, PullOptions{Insecure: true, Platform: tt.platform})
				if err != nil {
					t.Fatalf("Pull(%s, %q) = %v", ref, tt.platform, err)
				}
				if d := digestOf(t, tt.want); img.Digest != d || img.Platform != "linux/"+tt.arch {
					t.Errorf("Pull(%s, %q) = %s %s, want %s linux/%s", ref, tt.platform, img.Digest, img.Platform, d, tt.arch)
				}
				root, err := s.RootFS(img)
				if err != nil {
					t.Fatal(err)
				}
				if b, _ := os.ReadFile(filepath.Join(root, "arch")); string(b) != tt.arch {
					t.Errorf("RootFS(%s, %q)/arch = %q, want %q", ref, tt.platform, b, tt.arch)
				}
			}
			_, err = s.Pull(context.Background(), ref, PullOptions{Insecure: true, Platform: "linux/riscv64"})
			if err == nil || !strings.Contains(err.Error(), "riscv64") {
				t.Errorf("Pull(%s, linux/riscv64) = %v, want an error naming the platform", ref, err)
			}
			oneLineErr(t, err)
		})
	}
}

func TestPullErrors(t *testing.T) {
	reg := newRegistry(t)
	ref := reg.push(t, "t/img:1", image(t, "arm64", layer(t, file("f", "x"))))

	// A port nobody listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()

	for _, tt := range []struct {
		name, ref string
		platform  string
		notFound  bool
		contains  string
	}{
		{name: "missing tag", ref: reg.host + "/t/img:nope", notFound: true, contains: "t/img:nope"},
		{name: "missing repository", ref: reg.host + "/t/none:1", notFound: true},
		{name: "unreachable registry", ref: closed + "/t/img:1", contains: "connection refused"},
		{name: "bad reference", ref: "UPPER/Case::x", contains: "UPPER/Case::x"},
		{name: "bad platform", ref: ref, platform: "linux", contains: "platform"},
		{name: "wrong platform", ref: ref, platform: "linux/s390x", contains: "linux/arm64"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t)
			img, err := s.Pull(context.Background(), tt.ref, PullOptions{Insecure: true, Platform: tt.platform})
			if err == nil {
				t.Fatalf("Pull(%s) = %+v, want an error", tt.ref, img)
			}
			if !strings.HasPrefix(err.Error(), "pull "+tt.ref+": ") || !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("Pull(%s) = %q, want it to start with \"pull %s: \" and contain %q", tt.ref, err, tt.ref, tt.contains)
			}
			if errors.Is(err, ErrNotFound) != tt.notFound {
				t.Errorf("Pull(%s) = %v, errors.Is(ErrNotFound) = %v, want %v", tt.ref, err, !tt.notFound, tt.notFound)
			}
			oneLineErr(t, err)
			t.Log(err)
			if imgs, _ := s.List(); len(imgs) != 0 {
				t.Errorf("List() after failed Pull = %d images, want 0", len(imgs))
			}
		})
	}
}

func TestPullCanceled(t *testing.T) {
	reg := newRegistry(t)
	ref := reg.push(t, "t/img:1", image(t, runtime.GOARCH, layer(t, file("f", "x"))))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s := openStore(t)
	if _, err := s.Pull(ctx, ref, PullOptions{Insecure: true}); !errors.Is(err, context.Canceled) {
		t.Errorf("Pull(canceled) = %v, want context.Canceled", err)
	}
	checkStore(t, s)
}

func TestPullCorruptBlob(t *testing.T) {
	reg := newRegistry(t)
	good := layer(t, file("good", "g"))
	bad := layer(t, file("bad", strings.Repeat("b", 1000)))
	ref := reg.push(t, "x:1", image(t, runtime.GOARCH, good, bad))
	badDigest, _ := bad.Digest()
	reg.corrupt.Store(badDigest.String())

	s := openStore(t)
	_, err := s.Pull(context.Background(), ref, PullOptions{Insecure: true})
	want := fmt.Sprintf("pull %s: layer %s: digest mismatch (got sha256:", ref, badDigest)
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("Pull(%s) = %v, want %q...", ref, err, want)
	}
	t.Log(err)
	oneLineErr(t, err)
	if s.haveBlob(badDigest.String(), -1) {
		t.Errorf("store has the corrupt blob %s", badDigest)
	}
	if _, err := s.Get(ref); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(%s) after corrupt pull = %v, want ErrNotFound", ref, err)
	}
	checkStore(t, s)

	reg.corrupt.Store("")
	img, err := s.Pull(context.Background(), ref, PullOptions{Insecure: true})
	if err != nil {
		t.Fatalf("Pull(%s) after the registry healed = %v", ref, err)
	}
	if _, err := s.RootFS(img); err != nil {
		t.Errorf("RootFS() = %v", err)
	}
	checkStore(t, s)
}

func TestPullCorruptConfig(t *testing.T) {
	reg := newRegistry(t)
	img := image(t, runtime.GOARCH, layer(t, file("f", "x")))
	ref := reg.push(t, "x:1", img)
	cn, _ := img.ConfigName()
	reg.corrupt.Store(cn.String())
	s := openStore(t)
	_, err := s.Pull(context.Background(), ref, PullOptions{Insecure: true})
	if err == nil || !strings.Contains(err.Error(), "config "+cn.String()+": digest mismatch") {
		t.Errorf("Pull(%s) = %v, want a config digest mismatch", ref, err)
	}
	checkStore(t, s)
}

func TestPullConcurrent(t *testing.T) {
	reg := newRegistry(t)
	var layers []v1.Layer
	for i := range 4 {
		layers = append(layers, layer(t, file(fmt.Sprintf("f%d", i), strings.Repeat("x", 100000+i))))
	}
	ref := reg.push(t, "t/big:1", image(t, runtime.GOARCH, layers...))
	dir := t.TempDir()
	const n = 6
	var wg, built sync.WaitGroup
	built.Add(n)
	errs := make([]error, n)
	roots := make([]string, n)
	for i := range n {
		wg.Go(func() {
			s, err := Open(dir) // a Store each, as separate processes would have
			if err != nil {
				errs[i] = err
				built.Done()
				return
			}
			// Each keeps its root until all have theirs: a process
			// waiting for a root must not wait for another's sandbox.
			defer s.Close()
			defer built.Wait()
			defer built.Done()
			img, err := s.Pull(context.Background(), ref, PullOptions{Insecure: true})
			if err != nil {
				errs[i] = err
				return
			}
			roots[i], errs[i] = s.RootFS(img)
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("concurrent Pull and RootFS hang")
	}
	for i, err := range errs {
		if err != nil {
			t.Errorf("Pull/RootFS #%d = %v", i, err)
		}
		if roots[i] != roots[0] {
			t.Errorf("RootFS #%d = %s, want %s", i, roots[i], roots[0])
		}
	}
	s, _ := Open(dir)
	defer s.Close()
	checkStore(t, s)
	if imgs, _ := s.List(); len(imgs) != 1 {
		t.Errorf("List() = %d images, want 1", len(imgs))
	}
}

// TestPullProcesses pulls and flattens one image in two processes at once.
func TestPullProcesses(t *testing.T) {
	if dir := os.Getenv("IMAGES_TEST_STORE"); dir != "" {
		s, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		img, err := s.Pull(context.Background(), os.Getenv("IMAGES_TEST_REF"), PullOptions{Insecure: true})
		if err != nil {
			t.Fatal(err)
		}
		root, err := s.RootFS(img)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Println("ROOT", root)
		return
	}
	reg := newRegistry(t)
	var layers []v1.Layer
	for i := range 3 {
		layers = append(layers, layer(t, file(fmt.Sprintf("f%d", i), strings.Repeat("y", 200000))))
	}
	ref := reg.push(t, "t/proc:1", image(t, runtime.GOARCH, layers...))
	dir := t.TempDir()
	var cmds []*exec.Cmd
	var outs []*bytes.Buffer
	for range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestPullProcesses$", "-test.count=1")
		cmd.Env = append(os.Environ(), "IMAGES_TEST_STORE="+dir, "IMAGES_TEST_REF="+ref)
		out := &bytes.Buffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds, outs = append(cmds, cmd), append(outs, out)
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("process %d: %v\n%s", i, err, outs[i])
		}
		if !strings.Contains(outs[i].String(), "ROOT "+dir) {
			t.Errorf("process %d printed %q, want its root", i, outs[i])
		}
	}
	s, _ := Open(dir)
	defer s.Close()
	checkStore(t, s)
}

func TestRootFSOnce(t *testing.T) {
	reg := newRegistry(t)
	ref := reg.push(t, "t/once:1", image(t, runtime.GOARCH, layer(t, file("f", "x"))))
	s := openStore(t)
	img, root := pullRoot(t, s, ref)
	before, _ := os.Stat(root)
	// Another Store, as another process: finds it built.
	s2, _ := Open(s.Dir)
	defer s2.Close()
	for _, st := range []*Store{s, s2} {
		got, err := st.RootFS(img)
		if err != nil || got != root {
			t.Errorf("RootFS() again = %s, %v, want %s", got, err, root)
		}
	}
	after, _ := os.Stat(root)
	if !os.SameFile(before, after) {
		t.Errorf("RootFS() again rebuilt %s", root)
	}
	if _, err := s.RootFS(&Image{Ref: "x", Digest: "sha256:" + strings.Repeat("0", 64)}); !errors.Is(err, ErrNotFound) {
		t.Errorf("RootFS(unknown) = %v, want ErrNotFound", err)
	}
	if _, err := s.RootFS(&Image{Ref: "x", Digest: "sha256:../../etc"}); err == nil {
		t.Errorf("RootFS(bad digest) = nil, want an error")
	}
	checkStore(t, s)
}

func TestRootFSUnsafeLayer(t *testing.T) {
	reg := newRegistry(t)
	s := openStore(t)
	outside := filepath.Join(s.Dir, "..", "outside")
	for _, tt := range []struct {
		name   string
		layers []v1.Layer
	}{
		{"dot-dot", []v1.Layer{layer(t, file("../../../outside", "x"))}},
		{"hard link with dot-dot", []v1.Layer{layer(t, hardlink("passwd", "../../../outside"))}},
		{"hard link", []v1.Layer{layer(t, hardlink("passwd", "/etc/passwd"))}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ref := reg.push(t, "t/evil:"+strings.ReplaceAll(tt.name, " ", "-"), image(t, runtime.GOARCH, tt.layers...))
			img, err := s.Pull(context.Background(), ref, PullOptions{Insecure: true})
			if err != nil {
				t.Fatalf("Pull(%s) = %v (blobs are only stored, so it must work)", ref, err)
			}
			root, err := s.RootFS(img)
			if !errors.Is(err, ErrUnsafe) {
				t.Errorf("RootFS(%s) = %s, %v, want ErrUnsafe", ref, root, err)
			}
			oneLineErr(t, err)
			t.Log(err)
			if _, err := os.Lstat(outside); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s exists after RootFS(%s): %v", outside, ref, err)
			}
			if _, err := os.Lstat(filepath.Join(s.Dir, "rootfs", strings.TrimPrefix(img.Digest, "sha256:"))); err == nil {
				t.Errorf("RootFS(%s) left a root", ref)
			}
			checkStore(t, s)
		})
	}
}

func TestRemovePrune(t *testing.T) {
	reg := newRegistry(t)
	shared := layer(t, file("shared", "s"))
	a := image(t, runtime.GOARCH, shared, layer(t, file("a", strings.Repeat("a", 5000))))
	b := image(t, runtime.GOARCH, shared, layer(t, file("b", "b")))
	refA, refA2, refB := reg.push(t, "t/a:1", a), reg.push(t, "t/a:2", a), reg.push(t, "t/b:1", b)
	s := openStore(t)
	imgs := map[string]*Image{}
	for _, ref := range []string{refA, refA2, refB} {
		img, err := s.Pull(context.Background(), ref, PullOptions{Insecure: true})
		if err != nil {
			t.Fatal(err)
		}
		imgs[ref] = img
	}
	rootA, err := s.RootFS(imgs[refA])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RootFS(imgs[refB]); err != nil {
		t.Fatal(err)
	}
	list, err := s.List()
	if err != nil || len(list) != 3 || list[0].Ref != refA || list[1].Ref != refA2 || list[2].Ref != refB {
		t.Fatalf("List() = %v, %v, want %s %s %s", list, err, refA, refA2, refB)
	}

	// Nothing unused yet.
	if freed, err := s.Prune(); err != nil || freed != 0 {
		t.Errorf("Prune() = %d, %v, want 0, nil", freed, err)
	}

	if err := s.Remove(refA); err != nil {
		t.Fatalf("Remove(%s) = %v", refA, err)
	}
	if err := s.Remove(refA); !errors.Is(err, ErrNotFound) {
		t.Errorf("Remove(%s) again = %v, want ErrNotFound", refA, err)
	}
	// a:2 still uses everything of a.
	if freed, err := s.Prune(); err != nil || freed != 0 {
		t.Errorf("Prune() with a:2 left = %d, %v, want 0, nil", freed, err)
	}
	// Removing by digest prefix removes every reference to it.
	if err := s.Remove(imgs[refA].Digest[:15]); err != nil {
		t.Fatalf("Remove(digest prefix) = %v", err)
	}
	if _, err := s.Get(refA2); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(%s) after Remove(digest) = %v, want ErrNotFound", refA2, err)
	}

	// The root of a is still handed out by s: Prune keeps it.
	freed, err := s.Prune()
	if err != nil || freed == 0 {
		t.Errorf("Prune() = %d, %v, want > 0, nil", freed, err)
	}
	if _, err := os.Stat(rootA); err != nil {
		t.Errorf("Prune() removed the root in use: %v", err)
	}
	s.Close()
	freed2, err := s.Prune()
	if err != nil || freed2 == 0 {
		t.Errorf("Prune() after Close = %d, %v, want > 0, nil", freed2, err)
	}
	if _, err := os.Stat(rootA); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Prune() after Close kept %s: %v", rootA, err)
	}

	// b is whole: config, both layers, root.
	img, err := s.Get(refB)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RootFS(img); err != nil {
		t.Errorf("RootFS(%s) after Prune = %v", refB, err)
	}
	// 1 manifest + 1 config + 2 layers.
	if blobs, _ := os.ReadDir(filepath.Join(s.Dir, "blobs", "sha256")); len(blobs) != 4 {
		t.Errorf("store holds %d blobs after Prune, want 4", len(blobs))
	}
	checkStore(t, s)

	if err := s.Remove("sha256:" + strings.Repeat("f", 64)); !errors.Is(err, ErrNotFound) {
		t.Errorf("Remove(unknown digest) = %v, want ErrNotFound", err)
	}
}

func TestGetAmbiguousPrefix(t *testing.T) {
	s := openStore(t)
	for i, d := range []string{"ab" + strings.Repeat("0", 62), "ac" + strings.Repeat("0", 62)} {
		if err := s.writeRef(&Image{Ref: fmt.Sprintf("r%d", i), Digest: "sha256:" + d}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Get("a"); err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "ambiguous") {
		t.Errorf("Get(a) = %v, want ambiguous", err)
	}
	if img, err := s.Get("ab"); err != nil || img.Ref != "r0" {
		t.Errorf("Get(ab) = %v, %v, want r0", img, err)
	}
}

func TestLoadDockerArchive(t *testing.T) {
	img := image(t, runtime.GOARCH, layer(t, file("f", "1"), dir("d")), layer(t, file("d/g", "2")))
	other := image(t, runtime.GOARCH, layer(t, file("other", "o")))
	tag1, _ := name.NewTag("example.com/t/img:1")
	tag2, _ := name.NewTag("busybox")
	tag3, _ := name.NewTag("example.com/t/other:1")
	archive := filepath.Join(t.TempDir(), "docker.tar")
	f, err := os.Create(archive)
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.MultiWrite(map[name.Tag]v1.Image{tag1: img, tag2: img, tag3: other}, f); err != nil {
		t.Fatal(err)
	}
	f.Close()

	s := openStore(t)
	imgs, err := s.Load(context.Background(), archive)
	if err != nil {
		t.Fatalf("Load(%s) = %v", archive, err)
	}
	if len(imgs) != 3 {
		t.Fatalf("Load(%s) = %d images, want 3", archive, len(imgs))
	}
	got, err := s.Get("busybox")
	if err != nil {
		t.Fatalf("Get(busybox) = %v", err)
	}
	if got.Ref != "index.docker.io/library/busybox:latest" || fmt.Sprint(got.Config) != fmt.Sprint(testConfig2()) {
		t.Errorf("Get(busybox) = %+v", got)
	}
	if one, _ := s.Get("example.com/t/img:1"); one == nil || one.Digest != got.Digest {
		t.Errorf("Get(example.com/t/img:1) = %v, want digest %s", one, got.Digest)
	}
	root, err := s.RootFS(got)
	if err != nil {
		t.Fatal(err)
	}
	if d := diffTree(tree(t, root), map[string]string{"f": "f:1", "d": "d", "d/g": "f:2"}); d != "" {
		t.Errorf("RootFS() tree differs:%s", d)
	}
	checkStore(t, s)

	// Loading it again changes nothing, compressed or not.
	gz := archive + ".gz"
	compressFile(t, archive, gz)
	again, err := s.Load(context.Background(), gz)
	if err != nil {
		t.Fatalf("Load(%s) = %v", gz, err)
	}
	for i := range again {
		if again[i].Digest != imgs[i].Digest {
			t.Errorf("Load(%s)[%d].Digest = %s, want %s", gz, i, again[i].Digest, imgs[i].Digest)
		}
	}
	checkStore(t, s)

	// From a pipe, as from standard input.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		b, _ := os.ReadFile(archive)
		pw.Write(b)
		pw.Close()
	}()
	piped, err := s.Load(context.Background(), fmt.Sprintf("/proc/self/fd/%d", pr.Fd()))
	pr.Close()
	if err != nil || len(piped) != 3 {
		t.Errorf("Load(pipe) = %v, %v, want 3 images", piped, err)
	}
	checkStore(t, s)
}

func TestLoadDockerArchiveUntagged(t *testing.T) {
	img := image(t, runtime.GOARCH, layer(t, file("f", "1")))
	archive := filepath.Join(t.TempDir(), "untagged.tar")
	if err := tarball.WriteToFile(archive, nil, img); err != nil {
		t.Fatal(err)
	}
	s := openStore(t)
	imgs, err := s.Load(context.Background(), archive)
	if err != nil || len(imgs) != 1 {
		t.Fatalf("Load(%s) = %v, %v, want one image", archive, imgs, err)
	}
	if imgs[0].Ref != imgs[0].Digest {
		t.Errorf("Load(%s)[0].Ref = %s, want its digest", archive, imgs[0].Ref)
	}
	if got, err := s.Get(imgs[0].Digest[7:19]); err != nil || got.Digest != imgs[0].Digest {
		t.Errorf("Get(prefix) = %v, %v", got, err)
	}
}

func TestLoadOCILayout(t *testing.T) {
	named := image(t, runtime.GOARCH, layer(t, file("named", "n")))
	unnamed := image(t, runtime.GOARCH, layer(t, file("unnamed", "u")))
	foreign := image(t, "s390x", layer(t, file("arch", "s390x")))
	multi := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: foreign, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "s390x"}}},
		mutate.IndexAddendum{Add: named, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}}},
	)
	dir := t.TempDir()
	p, err := layoutWrite(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(named, layoutAnnotations("example.com/t/oci:1")); err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(unnamed); err != nil {
		t.Fatal(err)
	}
	// As skopeo and umoci write a tag, and docker save a tag beside
	// containerd's full name.
	if err := p.AppendImage(unnamed, layoutAnnotations("1.0")); err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(named, layout.WithAnnotations(map[string]string{
		"io.containerd.image.name":          "docker.io/t/saved:2",
		"org.opencontainers.image.ref.name": "2",
	})); err != nil {
		t.Fatal(err)
	}
	if err := p.AppendIndex(multi, layoutAnnotations("example.com/t/multi:1")); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), "oci.tar")
	tarDir(t, dir, archive)

	s := openStore(t)
	imgs, err := s.Load(context.Background(), archive)
	if err != nil {
		t.Fatalf("Load(%s) = %v", archive, err)
	}
	want := map[string]string{
		"example.com/t/oci:1":       digestOf(t, named),
		digestOf(t, unnamed):        digestOf(t, unnamed),
		"localhost/1.0:latest":      digestOf(t, unnamed),
		"index.docker.io/t/saved:2": digestOf(t, named),
		"example.com/t/multi:1":     digestOf(t, named),
	}
	if len(imgs) != len(want) {
		t.Fatalf("Load(%s) = %d images, want %d", archive, len(imgs), len(want))
	}
	for _, img := range imgs {
		if want[img.Ref] != img.Digest {
			t.Errorf("Load(%s): %s = %s, want %s", archive, img.Ref, img.Digest, want[img.Ref])
		}
	}
	// A short name finds the localhost/ name, as under podman.
	for _, short := range []string{"1.0", "1.0:latest", "localhost/1.0"} {
		if img, err := s.Get(short); err != nil || img.Ref != "localhost/1.0:latest" {
			t.Errorf("Get(%s) = %+v, %v; want localhost/1.0:latest", short, img, err)
		}
	}
	if err := s.Remove("1.0"); err != nil {
		t.Errorf("Remove(1.0) = %v", err)
	}
	if _, err := s.Get("1.0"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(1.0) after Remove(1.0) = %v, want ErrNotFound", err)
	}
	img, err := s.Get("example.com/t/oci:1")
	if err != nil {
		t.Fatal(err)
	}
	root, err := s.RootFS(img)
	if err != nil {
		t.Fatal(err)
	}
	if d := diffTree(tree(t, root), map[string]string{"named": "f:n"}); d != "" {
		t.Errorf("RootFS() tree differs:%s", d)
	}
	checkStore(t, s)
}

func TestLoadTags(t *testing.T) {
	one := image(t, runtime.GOARCH, layer(t, file("f", "1")))
	dir := t.TempDir()
	p, err := layoutWrite(filepath.Join(dir, "one"))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(one, layoutAnnotations("example.com/t/one:1")); err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(one, layoutAnnotations("example.com/t/one:again")); err != nil {
		t.Fatal(err)
	}
	two := filepath.Join(dir, "two.tar")
	tarDir(t, filepath.Join(dir, "one"), two)
	untagged := filepath.Join(dir, "untagged.tar")
	if err := tarball.WriteToFile(untagged, nil, one); err != nil {
		t.Fatal(err)
	}

	s := openStore(t)
	imgs, err := s.Load(context.Background(), untagged, "mine:1", "example.com/x/y")
	if err != nil {
		t.Fatalf("Load(--tag) = %v", err)
	}
	var refs []string
	for _, img := range imgs {
		refs = append(refs, img.Ref)
	}
	if want := "localhost/mine:1 example.com/x/y:latest"; strings.Join(refs, " ") != want {
		t.Errorf("Load(--tag mine:1 --tag example.com/x/y) named %q, want %q (and not the digest)", refs, want)
	}
	if img, err := s.Get("mine:1"); err != nil || img.Digest != imgs[0].Digest {
		t.Errorf("Get(mine:1) = %+v, %v", img, err)
	}
	for _, tt := range []struct {
		file, tag, want string
	}{
		{untagged, "Bad:Name", `--tag "Bad:Name": not an image name`},
		{untagged, "a@sha256:" + strings.Repeat("0", 64), `--tag "a@sha256:`},
		{untagged, "", `--tag "": not an image name`},
		{two, "t:1", "--tag names one image, and the archive holds 2"},
	} {
		before := refNames(t, s)
		_, err := s.Load(context.Background(), tt.file, tt.tag)
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("Load(%s, --tag %q) = %v, want one line containing %q", tt.file, tt.tag, err, tt.want)
		}
		if after := refNames(t, s); after != before {
			t.Errorf("Load(%s, --tag %q) changed the refs: %s, was %s", tt.file, tt.tag, after, before)
		}
	}
	checkStore(t, s)
}

func refNames(t *testing.T, s *Store) string {
	t.Helper()
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	var refs []string
	for _, img := range list {
		refs = append(refs, img.Ref)
	}
	return strings.Join(refs, " ")
}

func TestLocalName(t *testing.T) {
	for in, want := range map[string]string{
		"1.0":                                   "localhost/1.0:latest",
		"app:1.0":                               "localhost/app:1.0",
		"t/app":                                 "localhost/t/app:latest",
		"localhost/app:2":                       "localhost/app:2",
		"example.com/t/app:1":                   "example.com/t/app:1",
		"127.0.0.1:5000/app":                    "127.0.0.1:5000/app:latest",
		"docker.io/library/x:1":                 "index.docker.io/library/x:1",
		"Upper":                                 "",
		"a b":                                   "",
		"app@sha256:" + strings.Repeat("0", 64): "",
	} {
		got, err := LocalName(in)
		if got != want || (err == nil) != (want != "") {
			t.Errorf("LocalName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	notTar := filepath.Join(dir, "not.tar")
	os.WriteFile(notTar, bytes.Repeat([]byte("junk"), 1000), 0o644)
	emptyTar := filepath.Join(dir, "empty.tar")
	os.WriteFile(emptyTar, tarLayer(t, file("hello", "world")), 0o644)
	escape := filepath.Join(dir, "escape.tar")
	os.WriteFile(escape, tarLayer(t, file("oci-layout", "{}"), file("index.json", "{}"), file("../../x", "x")), 0o644)
	hugeManifest := filepath.Join(dir, "hugemanifest.tar")
	os.WriteFile(hugeManifest, tarLayer(t, file("manifest.json", "[]"+strings.Repeat(" ", MaxManifestSize))), 0o644)
	badManifest := filepath.Join(dir, "badmanifest.tar")
	os.WriteFile(badManifest, tarLayer(t, file("manifest.json", "[{\"Config\":\"nope.json\"}]")), 0o644)

	for _, tt := range []struct {
		file   string
		unsafe bool
	}{
		{notTar, false},
		{emptyTar, false},
		{escape, true},
		{badManifest, false},
		{hugeManifest, false},
		{filepath.Join(dir, "missing.tar"), false},
	} {
		s := openStore(t)
		imgs, err := s.Load(context.Background(), tt.file)
		if err == nil {
			t.Errorf("Load(%s) = %v, want an error", tt.file, imgs)
			continue
		}
		if !strings.HasPrefix(err.Error(), "load "+tt.file+": ") {
			t.Errorf("Load(%s) = %q, want it to name the file", tt.file, err)
		}
		if errors.Is(err, ErrUnsafe) != tt.unsafe {
			t.Errorf("Load(%s) = %v, want ErrUnsafe %v", tt.file, err, tt.unsafe)
		}
		oneLineErr(t, err)
		t.Log(err)
		checkStore(t, s)
	}
}

func TestDefaultDir(t *testing.T) {
	if os.Geteuid() == 0 {
		if got := DefaultDir(); got != "/var/lib/virt-sandbox/images" {
			t.Errorf("DefaultDir() as root = %s, want /var/lib/virt-sandbox/images", got)
		}
		return
	}
	t.Setenv("XDG_DATA_HOME", "/xdg")
	if got := DefaultDir(); got != "/xdg/virt-sandbox/images" {
		t.Errorf("DefaultDir() = %s, want /xdg/virt-sandbox/images", got)
	}
	t.Setenv("XDG_DATA_HOME", "")
	t.Setenv("HOME", "/home/u")
	if got := DefaultDir(); got != "/home/u/.local/share/virt-sandbox/images" {
		t.Errorf("DefaultDir() = %s, want /home/u/.local/share/virt-sandbox/images", got)
	}
}

// TestStoreUnprivileged runs the store's main tests as nobody when the
// tests run as root: a store in ~/.local/share belongs to a plain user.
func TestStoreUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("already not root: the other tests cover it")
	}
	runAsNobody(t, "^(TestPull|TestRemovePrune|TestLoadDockerArchive|TestLoadOCILayout|TestRootFSUnsafeLayer)$", "IMAGES_TEST_NOBODY")
}

func TestCheckCopy(t *testing.T) {
	sum := func(b string) (string, hash.Hash) {
		h := sha256.New()
		h.Write([]byte(b))
		return "sha256:" + hex.EncodeToString(h.Sum(nil)), h
	}
	want, _ := sum("data")
	for _, tt := range []struct {
		name  string
		read  string
		size  int64
		cerr  error
		wants string // "" for nil
	}{
		{"good", "data", 4, nil, ""},
		{"good, size unknown", "data", -1, nil, ""},
		{"wrong bytes", "dat4", 4, nil, "digest mismatch (got sha256:"},
		{"wrong bytes, library complains too", "dat4", 4, errors.New("error verifying"), "digest mismatch (got sha256:"},
		{"wrong bytes, size unknown", "dat4", -1, nil, "digest mismatch (got sha256:"},
		{"too long", "data!", 4, nil, "size mismatch (got more than 4 bytes)"},
		{"too short", "dat", 4, nil, "size mismatch (got 3 bytes, want 4)"},
		{"network error", "da", 4, io.ErrUnexpectedEOF, "unexpected EOF"},
		{"read error, size unknown", "da", -1, io.ErrUnexpectedEOF, "unexpected EOF"},
	} {
		_, h := sum(tt.read)
		err := checkCopy(want, tt.size, int64(len(tt.read)), h, tt.cerr)
		if (err == nil) != (tt.wants == "") || (err != nil && !strings.HasPrefix(err.Error(), tt.wants)) {
			t.Errorf("checkCopy(%s) = %v, want %q", tt.name, err, tt.wants)
		}
	}
}
