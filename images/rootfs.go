package images

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// RootFS returns the directory holding img flattened, building it on first
// use. Treat it as read-only: every sandbox of the image shares it. It is
// built once per digest even by concurrent processes: one builds under an
// exclusive flock (rootfs/<hex>.build) into a temporary directory and
// renames it into place; the others wait and use it. RootFS then keeps a
// shared flock (rootfs/<hex>.lock) until Close, so that Prune in any
// process leaves a root in use alone.
func (s *Store) RootFS(img *Image) (string, error) {
	if img == nil {
		return "", errors.New("rootfs: no image")
	}
	dir, err := s.rootFS(img)
	if err != nil {
		return "", fmt.Errorf("rootfs of %s: %w", img.Ref, oneLine(s.storeError(err)))
	}
	return dir, nil
}

func (s *Store) rootFS(img *Image) (string, error) {
	if err := validDigest(img.Digest); err != nil {
		return "", err
	}
	hexd := strings.TrimPrefix(img.Digest, "sha256:")
	dir := filepath.Join(s.Dir, "rootfs", hexd)

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held[hexd] != nil && complete(dir) {
		return dir, nil
	}

	// The store lock, shared, keeps Prune from deleting the blobs while
	// we read them and from deleting the lock file we are about to lock.
	unlock, err := s.lock(unix.LOCK_SH)
	if err != nil {
		return "", err
	}
	defer unlock.Close()
	// The use lock, held shared until Close, tells Prune the root is in
	// use. Nobody holds it exclusively but Prune, under the store lock.
	lf, err := os.OpenFile(dir+".lock", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return "", err
	}
	keep := false
	defer func() {
		if !keep {
			lf.Close()
		}
	}()
	if err := flock(lf, unix.LOCK_SH); err != nil {
		return "", err
	}
	if !complete(dir) {
		// The build lock is separate, so that waiting to build never
		// waits for a user of the root to finish.
		bf, err := os.OpenFile(dir+".build", os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return "", err
		}
		defer bf.Close()
		if err := flock(bf, unix.LOCK_EX); err != nil {
			return "", err
		}
		// Whoever had the lock before us may have built it.
		if !complete(dir) {
			if err := s.discardIncomplete(dir, lf); err != nil {
				return "", err
			}
			if err := s.build(img, dir); err != nil {
				return "", err
			}
		}
	}
	if old := s.held[hexd]; old != nil {
		old.Close()
	}
	s.held[hexd] = lf
	keep = true
	return dir, nil
}

func isDir(p string) bool {
	fi, err := os.Lstat(p)
	return err == nil && fi.IsDir()
}

// doneSuffix names a root's completion marker, rootfs/<hex>.done: written
// after the root got its name, removed before the root is. A root without
// one (its build or removal was cut short by a crash, or by a store
// version without markers) is built again.
const doneSuffix = ".done"

func complete(dir string) bool {
	fi, err := os.Lstat(dir + doneSuffix)
	return err == nil && fi.Mode().IsRegular() && isDir(dir)
}

// build flattens img's layers into a temporary directory and renames it
// to dir, so that dir, once there, is complete.
func (s *Store) build(img *Image, dir string) error {
	mb, err := s.readBlob(img.Digest)
	if err != nil {
		return fmt.Errorf("manifest %s: %w", img.Digest, err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(mb))
	if err != nil {
		return fmt.Errorf("manifest %s: %w", img.Digest, err)
	}
	cf, err := s.readConfig(m.Config.Digest.String())
	if err != nil {
		return err
	}
	if len(cf.RootFS.DiffIDs) != len(m.Layers) {
		return fmt.Errorf("manifest %s has %d layers, its config %d", img.Digest, len(m.Layers), len(cf.RootFS.DiffIDs))
	}

	tmp, err := os.MkdirTemp(filepath.Join(s.Dir, "tmp"), "rootfs-")
	if err != nil {
		return err
	}
	defer removeTree(tmp)
	// MkdirTemp makes 0700; a root must be searchable by everyone in the
	// sandbox (a layer's "./" entry may still say otherwise).
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	a, err := newApplier(tmp)
	if err != nil {
		return err
	}
	defer a.close()
	for i, l := range m.Layers {
		if err := s.applyLayer(a, l.Digest.String(), cf.RootFS.DiffIDs[i].String()); err != nil {
			return fmt.Errorf("layer %s: %w", l.Digest, err)
		}
	}
	if err := a.finish(); err != nil {
		return err
	}
	// The root must be on disk before its name is, or a crash could
	// leave a complete-looking but empty root.
	if err := syncFS(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	return s.writeFile(dir+doneSuffix, []byte(img.Digest+"\n"))
}

// discardIncomplete removes a root without its completion marker, left by
// a build or a removal cut short, or made by an older virt-sandbox without
// markers, whose runs may still use it. use is our shared use lock: only
// when nobody else holds it is the root removed.
func (s *Store) discardIncomplete(dir string, use *os.File) error {
	if !isDir(dir) {
		return nil
	}
	if err := unix.Flock(int(use.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return errors.New("its root is incomplete and still in use by another run (of an older virt-sandbox?): try again when that has ended")
	}
	err := s.discard(dir)
	if lerr := flock(use, unix.LOCK_SH); err == nil {
		err = lerr
	}
	return err
}

// discard takes p out of its place by renaming it into tmp, then removes
// it: a removal cut short leaves nothing under p's name.
func (s *Store) discard(p string) error {
	tmp, err := os.MkdirTemp(filepath.Join(s.Dir, "tmp"), "old-")
	if err != nil {
		return err
	}
	dst := filepath.Join(tmp, "x")
	if err := os.Rename(p, dst); err != nil {
		os.Remove(tmp)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	return removeTree(tmp)
}

// applyLayer applies blob digest, checking on the way that it decompresses
// to diffID as the image config says: a blob damaged on disk since it was
// verified must not become a root silently.
func (s *Store) applyLayer(a *applier, digest, diffID string) error {
	f, err := os.Open(s.blobPath(digest))
	if errors.Is(err, os.ErrNotExist) {
		return ErrNotFound
	}
	if err != nil {
		return err
	}
	defer f.Close()
	// The blob is hashed as it is read: one damaged on disk since it was
	// stored is removed, to be fetched again, and never becomes a root.
	bh := sha256.New()
	blob := io.TeeReader(f, bh)
	damaged := func() error {
		if got := "sha256:" + hex.EncodeToString(bh.Sum(nil)); got != digest {
			s.removeBlob(digest)
			return fmt.Errorf("%w (its content hashes to %s; removed: pull or load the image again)", ErrDamaged, got)
		}
		return nil
	}
	rc, _, err := decompress(blob)
	if err != nil {
		io.Copy(io.Discard, blob)
		if derr := damaged(); derr != nil {
			return derr
		}
		return err
	}
	defer rc.Close()
	h := sha256.New()
	aerr := a.apply(io.TeeReader(rc, h))
	if _, err := io.Copy(io.Discard, blob); err != nil && aerr == nil {
		aerr = err
	}
	if err := damaged(); err != nil {
		return err
	}
	if aerr != nil {
		return aerr
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != diffID {
		return fmt.Errorf("diff ID mismatch (got %s, want %s)", got, diffID)
	}
	return nil
}

func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}

// Prune removes the blobs and roots that no reference uses, and leftovers
// of interrupted operations, and returns how many bytes it freed. It waits
// for running pulls, loads and root builds, and skips roots that RootFS
// handed out and whose Store is not closed yet, in any process.
func (s *Store) Prune() (int64, error) {
	freed, err := s.prune()
	if err != nil {
		return freed, fmt.Errorf("prune %s: %w", s.Dir, oneLine(err))
	}
	return freed, nil
}

func (s *Store) prune() (int64, error) {
	unlock, err := s.lock(unix.LOCK_EX)
	if err != nil {
		return 0, err
	}
	defer unlock.Close()
	blobs, roots, err := s.inUse()
	if err != nil {
		return 0, err
	}
	var freed int64
	for _, step := range []func() (int64, error){
		func() (int64, error) { return s.pruneBlobs(blobs) },
		func() (int64, error) { return s.pruneRoots(roots) },
		s.pruneTmp,
	} {
		n, err := step()
		freed += n
		if err != nil {
			return freed, err
		}
	}
	return freed, nil
}

// inUse finds what the references use, by digest hex: the blobs (each
// image's manifest, config and layers) and the roots (one per manifest).
func (s *Store) inUse() (blobs, roots map[string]bool, err error) {
	imgs, err := s.List()
	if err != nil {
		return nil, nil, err
	}
	blobs, roots = map[string]bool{}, map[string]bool{}
	for _, img := range imgs {
		h := strings.TrimPrefix(img.Digest, "sha256:")
		blobs[h], roots[h] = true, true
		// A manifest that is missing or damaged marks nothing more: its
		// image cannot be used anyway.
		f, err := os.Open(s.blobPath(img.Digest))
		if err != nil {
			continue
		}
		m, err := v1.ParseManifest(f)
		f.Close()
		if err != nil {
			continue
		}
		blobs[m.Config.Digest.Hex] = true
		for _, l := range m.Layers {
			blobs[l.Digest.Hex] = true
		}
	}
	return blobs, roots, nil
}

// pruneBlobs removes the blobs not in used.
func (s *Store) pruneBlobs(used map[string]bool) (freed int64, err error) {
	blobs := filepath.Join(s.Dir, "blobs", "sha256")
	ents, err := os.ReadDir(blobs)
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		if used[e.Name()] {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		if err := os.Remove(filepath.Join(blobs, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return freed, err
		}
		freed += fi.Size()
	}
	return freed, nil
}

// pruneRoots removes the roots not in used (with their squashfs images,
// markers and locks) that no one holds.
func (s *Store) pruneRoots(used map[string]bool) (freed int64, err error) {
	rootDir := filepath.Join(s.Dir, "rootfs")
	ents, err := os.ReadDir(rootDir)
	if err != nil {
		return 0, err
	}
	seen := map[string]bool{}
	for _, e := range ents {
		h, _, _ := strings.Cut(e.Name(), ".")
		if used[h] || seen[h] || validDigest("sha256:"+h) != nil {
			continue
		}
		seen[h] = true
		n, err := s.pruneRoot(filepath.Join(rootDir, h))
		freed += n
		if err != nil {
			return freed, err
		}
	}
	return freed, nil
}

// pruneTmp removes whatever is in tmp: it belongs to an operation that
// died, since the others hold the store lock prune holds exclusively.
func (s *Store) pruneTmp() (freed int64, err error) {
	ents, err := os.ReadDir(filepath.Join(s.Dir, "tmp"))
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		p := filepath.Join(s.Dir, "tmp", e.Name())
		n := treeSize(p)
		if err := removeTree(p); err != nil {
			return freed, err
		}
		freed += n
	}
	return freed, nil
}

// pruneRoot removes root dir and its lock file unless someone holds the
// lock.
func (s *Store) pruneRoot(dir string) (int64, error) {
	lf, err := os.OpenFile(dir+".lock", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return 0, err
	}
	defer lf.Close()
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return 0, nil // in use
	}
	n := treeSize(dir)
	if fi, err := os.Stat(dir + ".squashfs"); err == nil {
		if err := os.Remove(dir + ".squashfs"); err != nil {
			return 0, err
		}
		n += fi.Size()
	}
	// The marker goes first: a removal cut short leaves a root that is
	// known to be incomplete.
	if err := os.Remove(dir + doneSuffix); err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, err
	}
	if err := s.discard(dir); err != nil {
		return 0, err
	}
	// Safe to delete while locked: anyone who would open them holds the
	// store lock, which we hold exclusively.
	for _, f := range []string{dir + ".lock", dir + ".build"} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return n, err
		}
	}
	return n, nil
}

// treeSize adds up the sizes of the regular files under p, each inode once.
func treeSize(p string) int64 {
	var n int64
	seen := map[[2]uint64]bool{}
	filepath.WalkDir(p, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			k := [2]uint64{uint64(st.Dev), st.Ino}
			if seen[k] {
				return nil
			}
			seen[k] = true
		}
		n += fi.Size()
		return nil
	})
	return n
}

// removeTree removes p even where a root's directories deny us writing
// (0555 /proc, 0500 dirs of a non-root store): it grants itself access to
// each directory on the way down. It never follows symlinks.
func removeTree(p string) error {
	err := os.RemoveAll(p)
	if err == nil || !errors.Is(err, fs.ErrPermission) {
		return err
	}
	filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
		if d != nil && d.IsDir() {
			os.Chmod(q, 0o700)
		}
		return nil
	})
	return os.RemoveAll(p)
}
