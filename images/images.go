// Package images runs Docker/OCI images without Docker: it pulls them from a
// registry or loads them from a tarball into a content-addressed store, and
// flattens an image into one read-only root directory per image digest.
//
// The store under Dir looks like this:
//
//	blobs/sha256/<hex>   layers, image configs and manifests, each verified
//	                     against its digest before it got its name
//	refs/<hex>.json      one record (an Image as JSON) per reference;
//	                     <hex> is the sha256 of the reference
//	rootfs/<hex>/        the flattened root of the image whose manifest is <hex>
//	rootfs/<hex>.build   flock: held exclusively while the root is built
//	rootfs/<hex>.lock    flock: held shared while RootFS's caller uses it
//	rootfs/<hex>.squashfs the root as a squashfs image, for remote hosts
//	tmp/                 temporary files; renamed into place when complete
//	lock                 flock: shared by Pull, Load and RootFS, exclusive by Prune
//
// Every file appears under its final name by rename(2), so readers never see
// a partial blob, record or root, and several processes may use one store at
// once. The directories are 0700: roots hold the images' setuid programs,
// and blobs may come from private registries.
package images

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/virt-sandbox/virt-sandbox/sandbox/hostdirs"
)

// ErrNotFound is wrapped by errors about an image, reference or registry
// manifest that does not exist.
var ErrNotFound = errors.New("not found")

// Image is one reference in the store and what it points to.
type Image struct {
	Ref      string    `json:"ref"`      // normalized, e.g. index.docker.io/library/busybox:latest
	Digest   string    `json:"digest"`   // manifest digest (sha256:...), the identity of the image
	Config   Config    `json:"config"`   // from the image config
	Size     int64     `json:"size"`     // sum of the layer blob sizes
	Created  time.Time `json:"created"`  // from the image config
	Platform string    `json:"platform"` // os/arch[/variant]
}

// Config is the part of an image config that says how to run the image.
type Config struct {
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	Env        []string `json:"env,omitempty"` // KEY=VALUE; VALUE may contain '='
	WorkingDir string   `json:"workingDir,omitempty"`
	User       string   `json:"user,omitempty"`
}

// Store is an image store in the directory Dir.
type Store struct {
	Dir string

	mu   sync.Mutex
	held map[string]*os.File // rootfs locks RootFS holds shared until Close
}

// DefaultDir is where the store lives: $VIRT_SANDBOX_IMAGE_STORE when set
// to an absolute path, else /var/lib/virt-sandbox/images for root, else
// $XDG_DATA_HOME/virt-sandbox/images (~/.local/share/...).
func DefaultDir() string {
	if d := os.Getenv("VIRT_SANDBOX_IMAGE_STORE"); filepath.IsAbs(d) {
		return d
	}
	return hostdirs.Images()
}

// Open opens the store in dir, creating its layout if needed.
func Open(dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("open image store: empty directory name")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open image store %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("open image store %s: %w", dir, err)
	}
	for _, d := range []string{"blobs", "blobs/sha256", "refs", "rootfs", "tmp"} {
		// 0700: roots hold the images' setuid-root programs, which local
		// users must not run on the host (docker's CVE-2021-41091), and
		// blobs may come from private registries.
		if err := os.Mkdir(filepath.Join(abs, d), 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("open image store %s: %w", dir, err)
		}
	}
	return &Store{Dir: abs, held: map[string]*os.File{}}, nil
}

// Close releases the roots RootFS handed out, which Prune then may remove.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for d, f := range s.held {
		f.Close()
		delete(s.held, d)
	}
	return nil
}

// Get finds an image by reference ("busybox" is
// index.docker.io/library/busybox:latest), by digest, or by a digest prefix
// that only one image has ("sha256:" is optional).
func (s *Store) Get(ref string) (*Image, error) {
	img, err := s.get(ref)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", ref, err)
	}
	return img, nil
}

func (s *Store) get(ref string) (*Image, error) {
	if r, err := name.ParseReference(ref); err == nil {
		for _, n := range storeNames(r, ref) {
			img, err := s.readRef(n)
			if err == nil || !errors.Is(err, ErrNotFound) {
				return img, err
			}
		}
		// repo@sha256:... names an image pulled by tag just as well.
		if d, ok := r.(name.Digest); ok {
			imgs, _ := s.byDigest(d.DigestStr())
			for _, img := range imgs {
				if ir, err := name.ParseReference(img.Ref); err == nil && ir.Context() == d.Context() {
					return img, nil
				}
			}
			return nil, ErrNotFound
		}
	}
	imgs, err := s.byDigest(ref)
	if err != nil {
		return nil, err
	}
	return imgs[0], nil
}

// storeNames are the names ref, parsed as r, may have in the store: Docker
// Hub's when it names no registry ("busybox"), then the name a loaded
// image without a registry has (localhost/busybox:latest), as podman
// looks short names up in its local storage.
func storeNames(r name.Reference, ref string) []string {
	names := []string{r.Name()}
	if _, digest := r.(name.Digest); !digest && !hasRegistry(ref) {
		if n, err := LocalName(ref); err == nil {
			names = append(names, n)
		}
	}
	return names
}

// byDigest returns the images (sorted by Ref) whose digest is, or starts
// with, d; ErrNotFound when none is, an error when the prefix names two
// different images.
func (s *Store) byDigest(d string) ([]*Image, error) {
	prefix := strings.TrimPrefix(d, "sha256:")
	if prefix == "" || len(prefix) > 64 || strings.Trim(prefix, "0123456789abcdef") != "" {
		return nil, ErrNotFound
	}
	all, err := s.List()
	if err != nil {
		return nil, err
	}
	var match []*Image
	for _, img := range all {
		if strings.HasPrefix(img.Digest, "sha256:"+prefix) {
			if len(match) > 0 && match[0].Digest != img.Digest {
				return nil, fmt.Errorf("digest prefix %s is ambiguous (%s, %s)", prefix, match[0].Digest, img.Digest)
			}
			match = append(match, img)
		}
	}
	if len(match) == 0 {
		return nil, ErrNotFound
	}
	return match, nil
}

// List returns every reference in the store, sorted by Ref.
func (s *Store) List() ([]*Image, error) {
	ents, err := os.ReadDir(filepath.Join(s.Dir, "refs"))
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	var imgs []*Image
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		img, err := readRecord(filepath.Join(s.Dir, "refs", e.Name()))
		if errors.Is(err, os.ErrNotExist) {
			continue // removed since ReadDir
		}
		if err != nil {
			return nil, fmt.Errorf("list images: %w", err)
		}
		imgs = append(imgs, img)
	}
	sort.Slice(imgs, func(i, j int) bool { return imgs[i].Ref < imgs[j].Ref })
	return imgs, nil
}

// Remove removes a reference, or every reference to a digest (or unique
// digest prefix). The content stays until Prune.
func (s *Store) Remove(ref string) error {
	if r, err := name.ParseReference(ref); err == nil {
		for _, n := range storeNames(r, ref) {
			err := os.Remove(s.refPath(n))
			if err == nil {
				return nil
			}
			if !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("remove %s: %w", ref, err)
			}
		}
	}
	imgs, err := s.byDigest(ref)
	if err != nil {
		return fmt.Errorf("remove %s: %w", ref, err)
	}
	for _, img := range imgs {
		if err := os.Remove(s.refPath(img.Ref)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", ref, err)
		}
	}
	return nil
}

// refPath names a ref's record by the hash of the ref, because refs hold
// '/' and ':' and may be longer than a file name may be.
func (s *Store) refPath(ref string) string {
	sum := sha256.Sum256([]byte(ref))
	return filepath.Join(s.Dir, "refs", hex.EncodeToString(sum[:])+".json")
}

func (s *Store) readRef(ref string) (*Image, error) {
	img, err := readRecord(s.refPath(ref))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotFound
	}
	return img, err
}

func readRecord(p string) (*Image, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var img Image
	if err := json.Unmarshal(b, &img); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if img.Ref == "" || validDigest(img.Digest) != nil {
		return nil, fmt.Errorf("%s: not an image record", p)
	}
	return &img, nil
}

func (s *Store) writeRef(img *Image) error {
	b, err := json.MarshalIndent(img, "", "\t")
	if err != nil {
		return err
	}
	return s.writeFile(s.refPath(img.Ref), append(b, '\n'))
}

// writeFile writes p atomically: readers see the old file or the whole new
// one, never a part.
func (s *Store) writeFile(p string, b []byte) error {
	f, err := os.CreateTemp(filepath.Join(s.Dir, "tmp"), "file-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := finishFile(f); err != nil {
		return err
	}
	return os.Rename(f.Name(), p)
}

// finishFile makes a temporary file durable and world-readable before it is
// renamed into place: after a crash a name must never point at lost data.
func finishFile(f *os.File) error {
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// MaxManifestSize bounds manifests, indexes and image configs, as
// containerd does: they are a few kilobytes, and are read into memory.
// The messages say "4 MiB": keep them in step.
const MaxManifestSize = 4 << 20

// MaxLayerSize bounds one layer (compressed, as stored): the largest real
// ones, of machine-learning images, have tens of gigabytes.
// The messages say "128 GiB": keep them in step.
const MaxLayerSize = 128 << 30

// checkSizes refuses, before anything is fetched or written, an image
// whose descriptors claim sizes it cannot have: a negative size, a config
// beyond MaxManifestSize, a layer beyond MaxLayerSize, or layers (those the
// store lacks) that need more than the store's filesystem has free.
func (s *Store) checkSizes(m *v1.Manifest) error {
	if err := checkManifestSize("config", m.Config); err != nil {
		return err
	}
	var need int64
	for _, l := range m.Layers {
		if l.Size < 0 {
			return fmt.Errorf("layer %s claims a negative size (%d)", l.Digest, l.Size)
		}
		if l.Size > MaxLayerSize {
			return fmt.Errorf("layer %s claims %s, more than the 128 GiB allowed", l.Digest, HumanSize(l.Size))
		}
		if !s.haveBlob(l.Digest.String(), l.Size) {
			need += l.Size
			if need < 0 { // overflow: absurd anyway
				need = math.MaxInt64
			}
		}
	}
	var st unix.Statfs_t
	if err := unix.Statfs(s.Dir, &st); err != nil {
		return nil // cannot tell: the copy itself will
	}
	if free := int64(st.Bavail) * st.Bsize; need > free {
		return fmt.Errorf("its layers claim %s, more than the %s free in the image store %s", HumanSize(need), HumanSize(free), s.Dir)
	}
	return nil
}

// checkManifestSize refuses a descriptor of a manifest, index or config
// that claims a size such a document cannot have.
func checkManifestSize(what string, d v1.Descriptor) error {
	if d.Size < 0 {
		return fmt.Errorf("%s %s claims a negative size (%d)", what, d.Digest, d.Size)
	}
	if d.Size > MaxManifestSize {
		return fmt.Errorf("%s %s claims %s, more than the 4 MiB allowed", what, d.Digest, HumanSize(d.Size))
	}
	return nil
}

// validDigest accepts only sha256 digests in canonical form, because the hex
// part becomes a file name.
func validDigest(d string) error {
	h, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "" {
		return fmt.Errorf("invalid digest %q", d)
	}
	return nil
}

func (s *Store) blobPath(digest string) string {
	return filepath.Join(s.Dir, "blobs", "sha256", strings.TrimPrefix(digest, "sha256:"))
}

// lock takes the store-wide flock: shared for anything that adds content,
// exclusive for Prune, so Prune never deletes a blob a Pull has stored but
// not yet referenced.
func (s *Store) lock(how int) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(s.Dir, "lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := flock(f, how); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			if err != nil {
				return fmt.Errorf("flock %s: %w", f.Name(), err)
			}
			return nil
		}
	}
}

// storeError tells a failure of the store's own files by the store's
// directory: the temporary and content-addressed names in it mean nothing
// to the user ("image store DIR: no space left on device").
func (s *Store) storeError(err error) error {
	for _, full := range []error{unix.ENOSPC, unix.EDQUOT} {
		if errors.Is(err, full) {
			return fmt.Errorf("image store %s: %w", s.Dir, full)
		}
	}
	var pe *fs.PathError
	if errors.As(err, &pe) && strings.HasPrefix(pe.Path, s.Dir+"/") {
		return fmt.Errorf("image store %s: %w", s.Dir, pe.Err)
	}
	var le *os.LinkError
	if errors.As(err, &le) && strings.HasPrefix(le.New, s.Dir+"/") {
		return fmt.Errorf("image store %s: %w", s.Dir, le.Err)
	}
	return err
}

// oneLine keeps errors from libraries (HTTP bodies, joined errors) to one
// line, so that every error this package returns reads as one line. An
// error that is one line already is returned as it is, so that errors.Is
// still finds context.Canceled and the like in it.
func oneLine(err error) error {
	if !strings.ContainsAny(err.Error(), "\n\r\t") {
		return err
	}
	return errors.New(strings.Join(strings.Fields(err.Error()), " "))
}

// ShortDigest abbreviates a digest to its first 12 hex digits, as docker
// shows image IDs.
func ShortDigest(d string) string {
	if _, hex, ok := strings.Cut(d, ":"); ok && len(hex) > 12 {
		return hex[:12]
	}
	return d
}

// HumanSize formats n bytes in decimal units, as docker does.
func HumanSize(n int64) string {
	units := []string{"B", "kB", "MB", "GB", "TB"}
	f := float64(n)
	i := 0
	for f >= 1000 && i < len(units)-1 {
		f /= 1000
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}
