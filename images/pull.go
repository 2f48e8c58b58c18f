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
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// PullOptions tune Pull.
type PullOptions struct {
	// Platform is os/arch[/variant]; "" is the host's runtime.GOOS/GOARCH.
	Platform string
	// Insecure allows plain http, for registries on loopback or in tests.
	Insecure bool
	// Progress receives progress: bars on a terminal, else plain lines.
	// nil means none.
	Progress io.Writer
}

// Pull fetches ref from its registry (with the credentials of
// ~/.docker/config.json), stores what the store lacks, verifies every blob
// against its digest, and records ref. For a multi-platform image it picks
// o.Platform.
func (s *Store) Pull(ctx context.Context, ref string, o PullOptions) (*Image, error) {
	img, err := s.pull(ctx, ref, o)
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, oneLine(s.storeError(err)))
	}
	return img, nil
}

func (s *Store) pull(ctx context.Context, ref string, o PullOptions) (*Image, error) {
	var nopts []name.Option
	if o.Insecure {
		nopts = append(nopts, name.Insecure)
	}
	r, err := name.ParseReference(ref, nopts...)
	if err != nil {
		return nil, oneLine(err)
	}
	plat := v1.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}
	if o.Platform != "" {
		p, err := v1.ParsePlatform(o.Platform)
		if err != nil || p.OS == "" || p.Architecture == "" {
			return nil, fmt.Errorf("invalid platform %q, want os/arch[/variant]", o.Platform)
		}
		plat = *p
	}

	unlock, err := s.lock(unix.LOCK_SH)
	if err != nil {
		return nil, err
	}
	defer unlock.Close()

	desc, err := remote.Get(r,
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(authn.DefaultKeychain),
		remote.WithPlatform(plat))
	if err != nil {
		return nil, remoteError(err)
	}
	if err := checkIndex(desc); err != nil {
		return nil, err
	}
	rimg, err := desc.Image() // for an index: the child for plat
	if err != nil {
		return nil, remoteError(err)
	}
	p := newProgress(o.Progress)
	img, err := s.store(rimg, p)
	if err != nil {
		return nil, remoteError(err)
	}
	if img.Platform != "" && !platformMatches(img.Platform, plat) {
		if o.Platform != "" {
			return nil, fmt.Errorf("image is for %s, not %s", img.Platform, plat.String())
		}
		p.printf("warning: image is for %s, not %s\n", img.Platform, plat.String())
	}
	if img.Platform == "" {
		img.Platform = plat.String()
	}
	img.Ref = r.Name()
	if err := s.writeRef(img); err != nil {
		return nil, err
	}
	return img, nil
}

// checkIndex refuses an index, or an index's manifest descriptors, that
// claim sizes no manifest has, before any manifest is fetched by them.
func checkIndex(desc *remote.Descriptor) error {
	if err := checkManifestSize("manifest", desc.Descriptor); err != nil {
		return err
	}
	if !desc.MediaType.IsIndex() {
		return nil
	}
	im, err := v1.ParseIndexManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return fmt.Errorf("index %s: %w", desc.Digest, err)
	}
	for _, m := range im.Manifests {
		if err := checkManifestSize("manifest", m); err != nil {
			return fmt.Errorf("index %s: %w", desc.Digest, err)
		}
	}
	return nil
}

// remoteError makes registry errors one line, and marks "no such
// manifest" with ErrNotFound so callers can tell it from a failure.
func remoteError(err error) error {
	var te *transport.Error
	if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
		return fmt.Errorf("%w: %s", ErrNotFound, oneLine(err))
	}
	return oneLine(err)
}

func platformMatches(have string, want v1.Platform) bool {
	p, err := v1.ParsePlatform(have)
	if err != nil {
		return false
	}
	return p.OS == want.OS && p.Architecture == want.Architecture &&
		(want.Variant == "" || p.Variant == want.Variant)
}

// Layer media types the flattener can apply; anything else (encrypted
// layers, Helm charts, WASM modules) is not a root file system.
var layerTypes = map[types.MediaType]bool{
	types.DockerLayer:                    true,
	types.DockerForeignLayer:             true,
	types.DockerUncompressedLayer:        true,
	types.OCILayer:                       true,
	types.OCILayerZStd:                   true,
	types.OCIUncompressedLayer:           true,
	types.OCIRestrictedLayer:             true,
	types.OCIUncompressedRestrictedLayer: true,
}

// store copies a docker or OCI image into the store: config and layers
// first, the manifest last, so that a stored manifest means a complete
// image. It returns the record for it, without Ref.
func (s *Store) store(img v1.Image, p *progress) (*Image, error) {
	raw, err := img.RawManifest()
	if err != nil {
		return nil, err
	}
	mt, err := img.MediaType()
	if err != nil {
		return nil, err
	}
	if mt != types.DockerManifestSchema2 && mt != types.OCIManifestSchema1 {
		return nil, fmt.Errorf("unsupported manifest type %s", mt)
	}
	digest := sha256Hash(raw).String()
	if len(raw) > MaxManifestSize {
		return nil, fmt.Errorf("manifest %s has %s, more than the 4 MiB allowed", digest, HumanSize(int64(len(raw))))
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", digest, err)
	}
	if err := s.checkSizes(m); err != nil {
		return nil, err
	}
	if ct := m.Config.MediaType; ct != types.DockerConfigJSON && ct != types.OCIConfigJSON {
		return nil, fmt.Errorf("not a container image: config type %s", ct)
	}

	cl, err := partial.ConfigLayer(img)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", m.Config.Digest, err)
	}
	if err := s.saveBlob(m.Config.Digest.String(), m.Config.Size, cl.Compressed, nil); err != nil {
		return nil, fmt.Errorf("config %s: %w", m.Config.Digest, err)
	}
	cf, err := s.readConfig(m.Config.Digest.String())
	if err != nil {
		return nil, err
	}
	if len(cf.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("manifest %s has %d layers, its config %d", digest, len(m.Layers), len(cf.RootFS.DiffIDs))
	}

	var size int64
	for _, l := range m.Layers {
		if !layerTypes[l.MediaType] {
			return nil, fmt.Errorf("layer %s: unsupported type %s", l.Digest, l.MediaType)
		}
		size += l.Size
	}
	for _, l := range m.Layers {
		d := l.Digest.String()
		if s.verifiedBlob(d, l.Size) {
			p.cached(d, l.Size)
			continue
		}
		open := func() (io.ReadCloser, error) {
			rl, err := img.LayerByDigest(l.Digest)
			if err != nil {
				return nil, err
			}
			return rl.Compressed()
		}
		if err := s.saveBlob(d, l.Size, open, p); err != nil {
			return nil, fmt.Errorf("layer %s: %w", d, err)
		}
	}
	if err := s.saveBlob(digest, int64(len(raw)), readerOf(raw), nil); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", digest, err)
	}
	return record(digest, cf, size), nil
}

func configPlatform(cf *v1.ConfigFile) string {
	if cf.OS == "" || cf.Architecture == "" {
		return ""
	}
	p := v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}
	return p.String()
}

func (s *Store) readConfig(digest string) (*v1.ConfigFile, error) {
	b, err := s.readBlob(digest)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", digest, err)
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", digest, err)
	}
	return cf, nil
}

// ErrDamaged is wrapped by errors about a blob in the store whose content
// no longer hashes to its name (damaged on disk since it was verified). The
// blob is removed, so that the next pull or load fetches it again.
var ErrDamaged = errors.New("damaged in the image store")

// readBlob reads a small blob (a manifest or config) and checks it.
func (s *Store) readBlob(digest string) ([]byte, error) {
	f, err := os.Open(s.blobPath(digest))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxManifestSize+1))
	if err != nil {
		return nil, err
	}
	if got := sha256Hash(b).String(); got != digest {
		s.removeBlob(digest)
		return nil, fmt.Errorf("%w (its content hashes to %s; removed: pull or load the image again)", ErrDamaged, got)
	}
	return b, nil
}

func (s *Store) removeBlob(digest string) {
	if validDigest(digest) == nil {
		os.Remove(s.blobPath(digest))
	}
}

// haveBlob reports whether the store has blob digest; size -1 is unknown.
// Names are only ever given to verified content, so the name is the proof
// that it was whole, but not that it still is: see verifiedBlob.
func (s *Store) haveBlob(digest string, size int64) bool {
	fi, err := os.Stat(s.blobPath(digest))
	return err == nil && fi.Mode().IsRegular() && (size < 0 || fi.Size() == size)
}

// verifiedBlob is haveBlob for a blob that is hashed again: one whose
// content has been damaged since it was stored is removed and reported
// missing, so that it is fetched again.
func (s *Store) verifiedBlob(digest string, size int64) bool {
	if !s.haveBlob(digest, size) {
		return false
	}
	f, err := os.Open(s.blobPath(digest))
	if err != nil {
		return false
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false
	}
	if "sha256:"+hex.EncodeToString(h.Sum(nil)) != digest {
		s.removeBlob(digest)
		return false
	}
	return true
}

// saveBlob stores the blob digest from open() unless the store has it. It
// hashes what it copies and gives the blob its name only if the hash is
// digest: registries and tarballs are not trusted. size -1 is unknown.
func (s *Store) saveBlob(digest string, size int64, open func() (io.ReadCloser, error), p *progress) error {
	if err := validDigest(digest); err != nil {
		return err
	}
	if s.verifiedBlob(digest, size) {
		return nil
	}
	rc, err := open()
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := os.CreateTemp(filepath.Join(s.Dir, "tmp"), "blob-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	h := sha256.New()
	var w io.Writer = io.MultiWriter(f, h)
	done := p.start(digest, size)
	if done.w != nil {
		w = io.MultiWriter(w, done.w)
	}
	var r io.Reader = rc
	if size >= 0 {
		r = io.LimitReader(rc, size+1) // a server that never stops must not fill the disk
	}
	n, cerr := io.Copy(w, r)
	err = checkCopy(digest, size, n, h, cerr)
	done.finish(err)
	if err != nil {
		f.Close()
		return err
	}
	if err := finishFile(f); err != nil {
		return err
	}
	return os.Rename(f.Name(), s.blobPath(digest))
}

// checkCopy judges a copy of size bytes (-1: unknown) that read n and
// hashed to h. Our own digest check comes first even when the copy failed,
// because go-containerregistry's own verification fails the read at EOF
// with a message of its own; the hash says what really happened.
func checkCopy(digest string, size, n int64, h hash.Hash, cerr error) error {
	got := "sha256:" + hex.EncodeToString(h.Sum(nil))
	switch {
	case size >= 0 && n > size:
		return fmt.Errorf("size mismatch (got more than %d bytes)", size)
	case n == size && got != digest:
		return fmt.Errorf("digest mismatch (got %s)", got)
	case cerr != nil:
		return oneLine(cerr)
	case size >= 0 && n != size:
		return fmt.Errorf("size mismatch (got %d bytes, want %d)", n, size)
	case got != digest:
		return fmt.Errorf("digest mismatch (got %s)", got)
	}
	return nil
}

// progress reports layer downloads to a writer: bars on a terminal, plain
// lines otherwise (logs, pipes). A nil *progress reports nothing.
type progress struct {
	w   io.Writer
	tty bool
}

func newProgress(w io.Writer) *progress {
	if w == nil {
		return nil
	}
	f, ok := w.(*os.File)
	return &progress{w: w, tty: ok && term.IsTerminal(int(f.Fd()))}
}

func (p *progress) printf(format string, args ...any) {
	if p != nil {
		fmt.Fprintf(p.w, format, args...)
	}
}

func (p *progress) cached(digest string, size int64) {
	p.printf("cached %s (%s)\n", ShortDigest(digest), HumanSize(size))
}

// layerProgress is one download: w counts bytes, finish ends the line.
type layerProgress struct {
	w      io.Writer
	finish func(error)
}

func (p *progress) start(digest string, size int64) layerProgress {
	if p == nil {
		return layerProgress{finish: func(error) {}}
	}
	if !p.tty {
		p.printf("pulling %s (%s)\n", ShortDigest(digest), HumanSize(size))
		return layerProgress{finish: func(err error) {
			if err == nil {
				p.printf("done %s\n", ShortDigest(digest))
			}
		}}
	}
	bar := progressbar.NewOptions64(size,
		progressbar.OptionSetWriter(p.w),
		progressbar.OptionSetDescription(ShortDigest(digest)),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionShowCount(),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetRenderBlankState(true),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(p.w) }),
	)
	return layerProgress{w: bar, finish: func(err error) {
		if err != nil {
			bar.Exit()
			fmt.Fprintln(p.w)
			return
		}
		bar.Finish()
	}}
}
