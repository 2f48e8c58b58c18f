// Package initrd assembles the initramfs a QEMU sandbox boots with: the
// static init and the kernel modules it must load, in load order. Building
// it means reading a few megabytes, so each distinct set of inputs is built
// once and kept in a cache under the hash of its contents.
package initrd

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/cavaliergopher/cpio"

	"github.com/virt-sandbox/virt-sandbox/config/guest"
	"github.com/virt-sandbox/virt-sandbox/kmod"
	"github.com/virt-sandbox/virt-sandbox/sandbox/lru"
	"github.com/virt-sandbox/virt-sandbox/sandbox/wholefile"
)

// Result describes the initrd Cached returned.
type Result struct {
	Path    string
	Built   bool          // false: it was in the cache
	Damaged bool          // the cached one was damaged, and was rebuilt
	Elapsed time.Duration // time spent building, when Built
}

// Cached returns an initrd holding init as /init and modules in order,
// building it in cacheDir unless an identical one is there. Concurrent
// callers are safe: each builds under a temporary name, makes it durable
// and renames it into place. A cached initrd is used only when its content
// hashes to its name, so one that was truncated or damaged on disk is
// rebuilt, never booted. Errors name cacheDir, never a temporary file.
func Cached(cacheDir, init string, modules []kmod.Module) (Result, error) {
	res, err := cached(cacheDir, init, modules)
	if err != nil {
		return Result{}, cacheError(cacheDir, err)
	}
	return res, nil
}

func cached(cacheDir, init string, modules []kmod.Module) (Result, error) {
	files := []entry{{name: "init", src: init, mode: 0o755}}
	for i, m := range modules {
		files = append(files, entry{name: guest.ModuleEntry(i, m.Path), src: m.Path, mode: 0o644})
	}
	key, err := hashOf(files)
	if err != nil {
		return Result{}, err
	}
	dst := filepath.Join(cacheDir, "initrd-"+key+".cpio")
	damaged := false
	if _, err := os.Stat(dst); err == nil {
		if verify(dst, key) {
			lru.Touch(dst)
			return Result{Path: dst}, nil
		}
		damaged = true
	}
	start := time.Now()
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return Result{}, err
	}
	// Readable by QEMU whichever user it runs as.
	if err := wholefile.Write(dst, 0o644, func(w io.Writer) error { return write(w, files) }); err != nil {
		return Result{}, err
	}
	trim(cacheDir)
	return Result{Path: dst, Built: true, Damaged: damaged, Elapsed: time.Since(start)}, nil
}

// cacheBudget bounds the initrds kept: every change of the init or of
// the kernel's modules makes a new one (about 10 MB each), so without a
// bound a cache grows with each upgrade.
const cacheBudget = 256 << 20

// trim removes the initrds used least recently beyond cacheBudget. One
// removed while a machine boots from it is no harm: QEMU has read it.
func trim(cacheDir string) {
	paths, _ := filepath.Glob(filepath.Join(cacheDir, "initrd-*.cpio"))
	lru.Trim(paths, cacheBudget, func(p string) { os.Remove(p) })
}

// verify tells whether the initrd at p is complete and undamaged: it holds
// entries whose names, modes and contents hash to key, as Cached named it,
// up to the archive's trailer.
func verify(p, key string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	h := sha256.New()
	r := cpio.NewReader(bufio.NewReaderSize(f, 1<<16))
	for {
		hdr, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return false
		}
		if hdr.Mode&cpio.TypeReg == 0 {
			continue // the modules directory
		}
		fmt.Fprintf(h, "%s %o\n", hdr.Name, hdr.Mode.Perm())
		n, err := io.Copy(h, r)
		if err != nil || n != hdr.Size {
			return false
		}
	}
	if hex.EncodeToString(h.Sum(nil))[:32] != key {
		return false
	}
	// The reader ends at the end of the file as at the trailer: the
	// trailer, then padding only, must end the file.
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	tail := make([]byte, min(fi.Size(), 1024))
	if _, err := f.ReadAt(tail, fi.Size()-int64(len(tail))); err != nil {
		return false
	}
	i := bytes.LastIndex(tail, []byte("TRAILER!!!\x00"))
	return i >= 0 && len(bytes.Trim(tail[i+len("TRAILER!!!\x00"):], "\x00")) == 0
}

// cacheError tells what failed in the cache by the cache's directory, not
// by the temporary names in it, which mean nothing to the user (a full
// disk: "initrd cache DIR: no space left on device"). Errors about the
// inputs keep their paths.
func cacheError(cacheDir string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) && inDir(cacheDir, pe.Path) {
		return fmt.Errorf("initrd cache %s: %w", cacheDir, pe.Err)
	}
	var le *os.LinkError
	if errors.As(err, &le) && inDir(cacheDir, le.New) {
		return fmt.Errorf("initrd cache %s: %w", cacheDir, le.Err)
	}
	return fmt.Errorf("building initrd: %w", err)
}

func inDir(dir, p string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && filepath.IsLocal(rel) || rel == "."
}

type entry struct {
	name string
	src  string
	mode cpio.FileMode
}

// hashOf is the cache key: the layout and every byte of every input.
func hashOf(files []entry) (string, error) {
	h := sha256.New()
	for _, f := range files {
		fmt.Fprintf(h, "%s %o\n", f.name, f.mode)
		if err := copyFile(h, f.src); err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:32], nil
}

func copyFile(w io.Writer, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}

func write(w io.Writer, files []entry) error {
	cw := cpio.NewWriter(w)
	if err := cw.WriteHeader(&cpio.Header{Name: guest.ModulesDir, Mode: cpio.TypeDir | 0o755}); err != nil {
		return err
	}
	for _, f := range files {
		fi, err := os.Stat(f.src)
		if err != nil {
			return err
		}
		if err := cw.WriteHeader(&cpio.Header{Name: f.name, Mode: cpio.TypeReg | f.mode, Size: fi.Size()}); err != nil {
			return err
		}
		if err := copyFile(cw, f.src); err != nil {
			return fmt.Errorf("%s: %w", f.src, err)
		}
	}
	return cw.Close()
}
