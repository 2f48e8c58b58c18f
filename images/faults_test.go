package images

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// damage flips a byte in the middle of p, keeping its size.
func damage(t *testing.T, p string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestDamagedBlobs: a blob damaged in the store after it was verified is
// never used. Flattening finds it (ErrDamaged) and removes it; a pull
// fetches it again; a damaged manifest or config is found the same way.
func TestDamagedBlobs(t *testing.T) {
	reg := newRegistry(t)
	l := layer(t, file("f", strings.Repeat("content", 1000)))
	img := image(t, runtime.GOARCH, l)
	ref := reg.push(t, "t/damaged:1", img)
	ld, _ := l.Digest()
	cn, _ := img.ConfigName()
	for _, tt := range []struct{ name, digest string }{
		{"layer", ld.String()},
		{"config", cn.String()},
		{"manifest", digestOf(t, img)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t)
			got, err := s.Pull(context.Background(), ref, PullOptions{Insecure: true})
			if err != nil {
				t.Fatal(err)
			}
			damage(t, s.blobPath(tt.digest))
			root, err := s.RootFS(got)
			if !errors.Is(err, ErrDamaged) {
				t.Fatalf("RootFS() with a damaged %s = %s, %v, want ErrDamaged", tt.name, root, err)
			}
			t.Log(err)
			oneLineErr(t, err)
			if strings.Contains(err.Error(), "/tmp/") || strings.Contains(err.Error(), s.Dir) {
				t.Errorf("error %q names the store's files", err)
			}
			if _, err := os.Stat(s.blobPath(tt.digest)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the damaged %s is still stored: %v", tt.name, err)
			}
			if _, err := os.Stat(filepath.Join(s.Dir, "rootfs", strings.TrimPrefix(got.Digest, "sha256:"))); err == nil {
				t.Errorf("a root was left for a damaged image")
			}
			if tmp, _ := os.ReadDir(filepath.Join(s.Dir, "tmp")); len(tmp) != 0 {
				t.Errorf("tmp holds %d leftovers, want none", len(tmp))
			}

			// Damaged again, the next pull fetches it anew.
			gets := reg.blobGets.Load()
			if got, err = s.Pull(context.Background(), ref, PullOptions{Insecure: true}); err != nil {
				t.Fatal(err)
			}
			if tt.name != "manifest" && reg.blobGets.Load() == gets {
				t.Errorf("Pull() did not fetch the missing %s", tt.name)
			}
			root, err = s.RootFS(got)
			if err != nil {
				t.Fatalf("RootFS() after a new pull = %v", err)
			}
			if d := diffTree(tree(t, root), map[string]string{"f": "f:" + strings.Repeat("content", 1000)}); d != "" {
				t.Errorf("root differs:%s", d)
			}
			checkStore(t, s)
		})
	}
	t.Run("pull", func(t *testing.T) {
		s := openStore(t)
		if _, err := s.Pull(context.Background(), ref, PullOptions{Insecure: true}); err != nil {
			t.Fatal(err)
		}
		damage(t, s.blobPath(ld.String()))
		gets := reg.blobGets.Load()
		if _, err := s.Pull(context.Background(), ref, PullOptions{Insecure: true}); err != nil {
			t.Fatal(err)
		}
		if reg.blobGets.Load() == gets {
			t.Errorf("Pull() kept the damaged layer instead of fetching it")
		}
		checkStore(t, s)
	})
}

// TestRootFSMarker: a root is used only with its completion marker. One
// without (a build or a removal cut short) is built again, not used.
func TestRootFSMarker(t *testing.T) {
	reg := newRegistry(t)
	ref := reg.push(t, "t/marker:1", image(t, runtime.GOARCH, layer(t, file("a", "1"), file("b", "2"))))
	s := openStore(t)
	img, root := pullRoot(t, s, ref)
	if _, err := os.Stat(root + doneSuffix); err != nil {
		t.Fatalf("no completion marker: %v", err)
	}
	// As a prune cut short would leave it: marker gone, half the files.
	os.Remove(root + doneSuffix)
	os.Remove(filepath.Join(root, "b"))
	// While a run (here s, as an older virt-sandbox would) holds it, it
	// is neither used nor removed.
	s2 := openStore(t)
	s2.Dir = s.Dir
	if got, err := s2.RootFS(img); err == nil || !strings.Contains(err.Error(), "in use by another run") {
		t.Errorf("RootFS() of an incomplete root in use = %s, %v, want it refused", got, err)
	}
	if _, err := os.Stat(filepath.Join(root, "a")); err != nil {
		t.Errorf("the root in use was removed: %v", err)
	}
	s.Close()
	root2, err := s2.RootFS(img)
	if err != nil {
		t.Fatal(err)
	}
	if d := diffTree(tree(t, root2), map[string]string{"a": "f:1", "b": "f:2"}); d != "" {
		t.Errorf("root without its marker was used:%s", d)
	}
	if _, err := os.Stat(root2 + doneSuffix); err != nil {
		t.Errorf("no completion marker after the rebuild: %v", err)
	}
	s2.Close()
	// Prune removes the marker with the root.
	if err := s2.Remove(ref); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Prune(); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(filepath.Join(s.Dir, "rootfs")); len(ents) != 0 {
		t.Errorf("rootfs holds %d entries after prune, want none", len(ents))
	}
	checkStore(t, s2)
}

// TestAbsurdSizes: descriptors claiming sizes an image cannot have are
// refused before anything is fetched by them or stored, with one line
// naming the image and what is wrong.
func TestAbsurdSizes(t *testing.T) {
	const tb = int64(1) << 40
	reg := newRegistry(t)
	good := image(t, runtime.GOARCH, layer(t, file("f", "x")))

	// A manifest whose layer claims 1 TB: pushed raw.
	raw, err := good.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	m, err := v1.ParseManifest(strings.NewReader(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	m.Layers[0].Size = tb
	bigLayer := rawManifestImage{Image: good, manifest: m}
	bigLayerRef := reg.push(t, "t/biglayer:1", bigLayer)

	// An index whose manifest descriptor claims 1 TB.
	idx := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: good, Descriptor: v1.Descriptor{
		Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH},
	}})
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	im = im.DeepCopy()
	im.Manifests[0].Size = tb
	bigIndexRef := reg.pushIndex(t, "t/bigindex:1", rawIndex{Index: idx, manifest: im})

	s := openStore(t)
	for _, tt := range []struct{ ref, want string }{
		{bigLayerRef, "claims 1.1 TB, more than the 128 GiB allowed"},
		{bigIndexRef, "claims 1.1 TB, more than the 4 MiB allowed"},
	} {
		gets := reg.blobGets.Load()
		_, err := s.Pull(context.Background(), tt.ref, PullOptions{Insecure: true})
		if err == nil || !strings.HasPrefix(err.Error(), "pull "+tt.ref+": ") || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Pull(%s) = %v, want %q", tt.ref, err, tt.want)
			continue
		}
		t.Log(err)
		oneLineErr(t, err)
		if n := reg.blobGets.Load() - gets; n > 1 {
			t.Errorf("Pull(%s) fetched %d blobs before refusing", tt.ref, n)
		}
	}
	checkStore(t, s)
	if ents, _ := os.ReadDir(filepath.Join(s.Dir, "blobs", "sha256")); len(ents) > 1 {
		t.Errorf("the store holds %d blobs after refusing, want at most the config", len(ents))
	}

	// An OCI layout whose index.json claims 1 TB for a manifest.
	dir := t.TempDir()
	p, err := layoutWrite(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(good, layoutAnnotations("example.com/t/huge:1")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var lim v1.IndexManifest
	if err := json.Unmarshal(b, &lim); err != nil {
		t.Fatal(err)
	}
	lim.Manifests[0].Size = tb
	b, _ = json.Marshal(lim)
	os.WriteFile(filepath.Join(dir, "index.json"), b, 0o644)
	archive := filepath.Join(t.TempDir(), "huge.tar")
	tarDir(t, dir, archive)
	s2 := openStore(t)
	_, err = s2.Load(context.Background(), archive)
	want := "load " + archive + ": image example.com/t/huge:1: manifest " + digestOf(t, good) + " claims 1.1 TB, more than the 4 MiB allowed"
	if err == nil || err.Error() != want {
		t.Errorf("Load() = %v, want %s", err, want)
	}
	oneLineErr(t, err)
	checkStore(t, s2)
	if ents, _ := os.ReadDir(filepath.Join(s2.Dir, "blobs", "sha256")); len(ents) != 0 {
		t.Errorf("the store holds %d blobs after refusing, want none", len(ents))
	}
}

// rawManifestImage is an image whose manifest is manifest, as it is.
type rawManifestImage struct {
	v1.Image
	manifest *v1.Manifest
}

func (i rawManifestImage) Manifest() (*v1.Manifest, error) { return i.manifest, nil }
func (i rawManifestImage) RawManifest() ([]byte, error)    { return json.Marshal(i.manifest) }
func (i rawManifestImage) Digest() (v1.Hash, error) {
	b, _ := i.RawManifest()
	return sha256Hash(b), nil
}
func (i rawManifestImage) Size() (int64, error) {
	b, _ := i.RawManifest()
	return int64(len(b)), nil
}
func (i rawManifestImage) MediaType() (types.MediaType, error) { return i.manifest.MediaType, nil }

// rawIndex is an index whose manifest is manifest, as it is.
type rawIndex struct {
	Index
	manifest *v1.IndexManifest
}

// Index is v1.ImageIndex under a name that does not clash with its method.
type Index = v1.ImageIndex

func (i rawIndex) IndexManifest() (*v1.IndexManifest, error) { return i.manifest, nil }
func (i rawIndex) RawManifest() ([]byte, error)              { return json.Marshal(i.manifest) }
func (i rawIndex) Digest() (v1.Hash, error) {
	b, _ := i.RawManifest()
	return sha256Hash(b), nil
}
func (i rawIndex) Size() (int64, error) {
	b, _ := i.RawManifest()
	return int64(len(b)), nil
}

// pushIndex stores idx in the registry as repo:tag and returns the reference.
func (r *testRegistry) pushIndex(t *testing.T, repoTag string, idx v1.ImageIndex) string {
	t.Helper()
	ref, nr := r.reference(t, repoTag)
	if err := remote.WriteIndex(nr, idx); err != nil {
		t.Fatalf("remote.WriteIndex(%s) = %v", ref, err)
	}
	return ref
}

// TestCheckSizes: the limits on what descriptors may claim.
func TestCheckSizes(t *testing.T) {
	s := openStore(t)
	d := func(size int64) v1.Descriptor {
		return v1.Descriptor{Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("a", 64)}, Size: size}
	}
	for _, tt := range []struct {
		name   string
		config int64
		layers []int64
		want   string // "" for none
	}{
		{"small", 1000, []int64{1000, 2000}, ""},
		{"config at the limit", MaxManifestSize, nil, ""},
		{"config beyond", MaxManifestSize + 1, nil, "config sha256:aaaa"},
		{"negative config", -1, nil, "claims a negative size (-1)"},
		{"negative layer", 10, []int64{-5}, "claims a negative size (-5)"},
		{"layer beyond", 10, []int64{MaxLayerSize + 1}, "more than the 128 GiB allowed"},
		// 2 TiB in all: more than a test machine has free.
		{"layers beyond the free space", 10, slices.Repeat([]int64{MaxLayerSize}, 16), "its layers claim 2.2 TB, more than the"},
	} {
		m := &v1.Manifest{Config: d(tt.config)}
		for _, l := range tt.layers {
			m.Layers = append(m.Layers, d(l))
		}
		err := s.checkSizes(m)
		if tt.want == "" {
			if err != nil {
				t.Errorf("%s: checkSizes() = %v, want nil", tt.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: checkSizes() = %v, want %q", tt.name, err, tt.want)
		}
	}
}
