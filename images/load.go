package images

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"
)

// Load stores the images of a tarball: a docker-archive (the output of
// docker save, with manifest.json) or an OCI image layout (index.json and
// oci-layout), either of them possibly gzip- or zstd-compressed. An image
// is recorded under each of its names (RepoTags; an OCI layout's
// io.containerd.image.name, else org.opencontainers.image.ref.name, as
// LocalName makes them) and tags, which need an archive of one image; an
// image without any under its digest. For a multi-platform image in an OCI
// layout it takes the host's platform.
func (s *Store) Load(ctx context.Context, tarball string, tags ...string) ([]*Image, error) {
	imgs, err := s.load(ctx, tarball, tags)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", tarball, oneLine(s.storeError(err)))
	}
	return imgs, nil
}

func (s *Store) load(ctx context.Context, file string, tags []string) ([]*Image, error) {
	var names []string
	for _, t := range tags {
		n, err := LocalName(t)
		if err != nil {
			return nil, fmt.Errorf("--tag %q: %w", t, err)
		}
		names = append(names, n)
	}
	tags = names
	unlock, err := s.lock(unix.LOCK_SH)
	if err != nil {
		return nil, err
	}
	defer unlock.Close()
	tmp, err := os.MkdirTemp(filepath.Join(s.Dir, "tmp"), "load-")
	if err != nil {
		return nil, err
	}
	defer removeTree(tmp)

	file, err = decompressFile(file, filepath.Join(tmp, "archive.tar"))
	if err != nil {
		return nil, err
	}
	docker, oci, err := archiveKind(file)
	if err != nil {
		return nil, err
	}
	switch {
	case docker:
		// Checked first: docker save since Docker 25 writes both, and
		// manifest.json has the full names.
		return s.loadDocker(ctx, file, tags)
	case oci:
		dir := filepath.Join(tmp, "layout")
		if err := extractLayout(file, dir); err != nil {
			return nil, err
		}
		return s.loadOCI(ctx, dir, tags)
	}
	return nil, errors.New("neither a docker-archive (no manifest.json) nor an OCI layout (no index.json and oci-layout)")
}

// decompressFile returns file, or tmp holding its content if it is
// compressed or not a regular file: tarball.Image reopens the archive for
// every file it reads, which must neither decompress it again each time
// nor fail on a pipe such as /dev/stdin.
func decompressFile(file, tmp string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	if fi.IsDir() {
		return "", errors.New("is a directory, not a tarball")
	}
	r, compressed, err := decompress(f)
	if err != nil {
		return "", err
	}
	defer r.Close()
	if !compressed && fi.Mode().IsRegular() {
		return file, nil
	}
	out, err := os.Create(tmp)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(out, r); err != nil {
		out.Close()
		return "", fmt.Errorf("reading: %w", err)
	}
	return tmp, out.Close()
}

func archiveKind(file string) (docker, oci bool, err error) {
	f, err := os.Open(file)
	if err != nil {
		return false, false, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var index, ociLayout bool
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return false, false, fmt.Errorf("not a tar archive: %w", err)
		}
		name := path.Clean(strings.TrimLeft(hdr.Name, "/"))
		if (name == "manifest.json" || name == "index.json") && hdr.Size > MaxManifestSize {
			// Read into memory whole: refused before it is.
			return false, false, fmt.Errorf("%s has %s, more than the 4 MiB allowed", name, HumanSize(hdr.Size))
		}
		switch name {
		case "manifest.json":
			docker = true
		case "index.json":
			index = true
		case "oci-layout":
			ociLayout = true
		}
	}
	return docker, index && ociLayout, nil
}

func (s *Store) loadDocker(ctx context.Context, file string, tags []string) ([]*Image, error) {
	opener := func() (io.ReadCloser, error) { return os.Open(file) }
	m, err := tarball.LoadManifest(opener)
	if err != nil {
		return nil, fmt.Errorf("manifest.json: %w", oneLine(err))
	}
	if len(m) == 0 {
		return nil, errors.New("manifest.json lists no image")
	}
	if err := checkTagged(tags, len(m)); err != nil {
		return nil, err
	}
	var out []*Image
	for i, d := range m {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var refs []string
		for _, t := range d.RepoTags {
			tag, err := name.NewTag(t)
			if err != nil {
				return nil, fmt.Errorf("image %d: %w", i+1, oneLine(err))
			}
			refs = append(refs, tag.Name())
		}
		var img v1.Image
		switch {
		case len(refs) > 0:
			tag, _ := name.NewTag(d.RepoTags[0])
			img, err = tarball.Image(opener, &tag)
		case len(m) == 1:
			img, err = tarball.Image(opener, nil)
		default:
			// tarball.Image can only pick an image by tag.
			return nil, fmt.Errorf("image %d has no name, and the archive holds %d images", i+1, len(m))
		}
		if err != nil {
			return nil, fmt.Errorf("image %d: %w", i+1, oneLine(err))
		}
		rec, err := s.storeUncompressed(img)
		if err != nil {
			return nil, fmt.Errorf("image %d: %w", i+1, err)
		}
		named, err := s.name(rec, append(refs, tags...))
		if err != nil {
			return nil, err
		}
		out = append(out, named...)
	}
	return out, nil
}

// checkTagged refuses --tag for an archive of more than one image, before
// anything is stored: which one it would name is not said.
func checkTagged(tags []string, images int) error {
	if len(tags) > 0 && images > 1 {
		return fmt.Errorf("--tag names one image, and the archive holds %d", images)
	}
	return nil
}

// name records rec under each of refs (once each), or under its digest
// when there are none.
func (s *Store) name(rec *Image, refs []string) ([]*Image, error) {
	if len(refs) == 0 {
		refs = []string{rec.Digest}
	}
	var out []*Image
	seen := map[string]bool{}
	for _, r := range refs {
		if seen[r] {
			continue
		}
		seen[r] = true
		img := *rec
		img.Ref = r
		if err := s.writeRef(&img); err != nil {
			return nil, err
		}
		out = append(out, &img)
	}
	return out, nil
}

// storeUncompressed stores a docker-archive image with its layers as they
// are named in its config: uncompressed, by diff ID. docker save writes
// them uncompressed, and taking them as they are spares compressing each
// layer (twice, for go-containerregistry's digest and for the copy) only to
// decompress it again in RootFS. The image digest is that of an OCI
// manifest made for them here.
func (s *Store) storeUncompressed(img v1.Image) (*Image, error) {
	raw, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config: %w", oneLine(err))
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        v1.Descriptor{MediaType: types.OCIConfigJSON, Size: int64(len(raw)), Digest: sha256Hash(raw)},
	}
	if err := s.saveBlob(m.Config.Digest.String(), m.Config.Size, readerOf(raw), nil); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var size int64
	for _, id := range cf.RootFS.DiffIDs {
		l, err := img.LayerByDiffID(id)
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", id, oneLine(err))
		}
		// The blob's digest is its diff ID from the config, so saveBlob
		// checks the layer against the config.
		if err := s.saveBlob(id.String(), -1, l.Uncompressed, nil); err != nil {
			return nil, fmt.Errorf("layer %s: %w", id, err)
		}
		fi, err := os.Stat(s.blobPath(id.String()))
		if err != nil {
			return nil, err
		}
		size += fi.Size()
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: types.OCIUncompressedLayer, Size: fi.Size(), Digest: id})
	}
	mraw, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	digest := sha256Hash(mraw).String()
	if err := s.saveBlob(digest, int64(len(mraw)), readerOf(mraw), nil); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	rec := record(digest, cf, size)
	if rec.Platform == "" {
		rec.Platform = runtime.GOOS + "/" + runtime.GOARCH
	}
	return rec, nil
}

func (s *Store) loadOCI(ctx context.Context, dir string, tags []string) ([]*Image, error) {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("OCI layout: %w", oneLine(err))
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("index.json: %w", oneLine(err))
	}
	n := 0
	for _, d := range im.Manifests {
		if d.MediaType.IsImage() || d.MediaType.IsIndex() {
			n++
		}
	}
	if err := checkTagged(tags, n); err != nil {
		return nil, err
	}
	var out []*Image
	for _, d := range im.Manifests {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := checkLayoutBlob(dir, d); err != nil {
			return nil, fmt.Errorf("image %s: %w", layoutLabel(d), err)
		}
		var img v1.Image
		switch {
		case d.MediaType.IsImage():
			img, err = idx.Image(d.Digest)
		case d.MediaType.IsIndex():
			img, err = hostImage(idx, d.Digest)
		default:
			continue // an artifact, not an image
		}
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", layoutLabel(d), oneLine(err))
		}
		rec, err := s.store(img, nil)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", layoutLabel(d), err)
		}
		if rec.Platform == "" {
			rec.Platform = runtime.GOOS + "/" + runtime.GOARCH
		}
		var refs []string
		if n := layoutName(d.Annotations); n != "" {
			refs = append(refs, n)
		}
		named, err := s.name(rec, append(refs, tags...))
		if err != nil {
			return nil, err
		}
		out = append(out, named...)
	}
	if len(out) == 0 {
		return nil, errors.New("index.json lists no image")
	}
	return out, nil
}

// layoutLabel names an image of an OCI layout in errors: by its name when
// it has one, else by its digest.
func layoutLabel(d v1.Descriptor) string {
	if n := layoutName(d.Annotations); n != "" {
		return n
	}
	return d.Digest.String()
}

// checkLayoutBlob refuses a descriptor of index.json that claims a size no
// manifest or index has, or another than its blob in the layout has.
func checkLayoutBlob(dir string, d v1.Descriptor) error {
	what := "manifest"
	if d.MediaType.IsIndex() {
		what = "index"
	}
	if err := checkManifestSize(what, d); err != nil {
		return err
	}
	if validDigest(d.Digest.String()) != nil {
		return fmt.Errorf("%s digest %q is not a sha256 digest", what, d.Digest)
	}
	fi, err := os.Stat(filepath.Join(dir, "blobs", "sha256", d.Digest.Hex))
	if err != nil {
		return fmt.Errorf("%s %s is not in the layout", what, d.Digest)
	}
	if fi.Size() != d.Size {
		return fmt.Errorf("%s %s claims %d bytes, its blob has %d", what, d.Digest, d.Size, fi.Size())
	}
	return nil
}

// hostImage picks the host platform's image of a multi-platform index.
func hostImage(idx v1.ImageIndex, d v1.Hash) (v1.Image, error) {
	child, err := idx.ImageIndex(d)
	if err != nil {
		return nil, err
	}
	im, err := child.IndexManifest()
	if err != nil {
		return nil, err
	}
	for _, c := range im.Manifests {
		if c.Platform != nil && c.Platform.OS == runtime.GOOS && c.Platform.Architecture == runtime.GOARCH && c.MediaType.IsImage() {
			return child.Image(c.Digest)
		}
	}
	return nil, fmt.Errorf("no image for %s/%s", runtime.GOOS, runtime.GOARCH)
}

// layoutName is the name an OCI layout gives an image, as podman load
// reads it: containerd's io.containerd.image.name (a full name, which
// docker save writes too), else org.opencontainers.image.ref.name, both as
// LocalName makes them. A ref name is often only a tag ("1.0", as skopeo
// and umoci write it); podman takes it for a name all the same
// (localhost/1.0:latest), and so does this. A value that is no image name
// gives none: the image is still loaded, under its digest.
func layoutName(a map[string]string) string {
	v := a["io.containerd.image.name"]
	if v == "" {
		v = a["org.opencontainers.image.ref.name"]
	}
	if v == "" {
		return ""
	}
	n, err := LocalName(v)
	if err != nil {
		return ""
	}
	return n
}

// LocalName is the store's name for an image named s by a loaded archive
// or by --tag, as podman names loaded images: a name without a registry is
// under localhost/ (podman's rule: the first component names a registry
// when it has a '.' or ':' or is localhost), a name without a tag is
// :latest. Get and Remove find these names by the short name too.
func LocalName(s string) (string, error) {
	if !hasRegistry(s) {
		s = "localhost/" + s
	}
	t, err := name.NewTag(s)
	if err != nil {
		return "", fmt.Errorf("not an image name: %w", oneLine(err))
	}
	return t.Name(), nil
}

func hasRegistry(s string) bool {
	first, _, ok := strings.Cut(s, "/")
	return ok && (strings.ContainsAny(first, ".:") || first == "localhost")
}

// extractLayout unpacks an OCI layout tarball into dir. A layout holds
// only directories and regular files, so nothing else is created, which
// leaves no symlink to escape through; os.Root refuses ".." besides.
func extractLayout(file, dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading tar: %w", err)
		}
		p := path.Clean(strings.TrimLeft(hdr.Name, "/"))
		if p == "." {
			continue
		}
		if !filepath.IsLocal(p) {
			return fmt.Errorf("%q: %w: leaves the layout", hdr.Name, ErrUnsafe)
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			err = root.MkdirAll(p, 0o700)
		case tar.TypeReg:
			err = writeInRoot(root, p, tr)
		}
		if err != nil {
			return fmt.Errorf("%q: %w", hdr.Name, err)
		}
	}
}

func writeInRoot(root *os.Root, p string, r io.Reader) error {
	if d := path.Dir(p); d != "." {
		if err := root.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	f, err := root.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// record is the store's record of an image, without Ref.
func record(digest string, cf *v1.ConfigFile, size int64) *Image {
	return &Image{
		Digest: digest,
		Config: Config{
			Entrypoint: cf.Config.Entrypoint,
			Cmd:        cf.Config.Cmd,
			Env:        cf.Config.Env,
			WorkingDir: cf.Config.WorkingDir,
			User:       cf.Config.User,
		},
		Size:     size,
		Created:  cf.Created.Time.UTC(),
		Platform: configPlatform(cf),
	}
}

func sha256Hash(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

func readerOf(b []byte) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}
