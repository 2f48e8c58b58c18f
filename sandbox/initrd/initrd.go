// Package initrd assembles the initramfs a QEMU sandbox boots with: the
// static init and the kernel modules it must load, in load order. Building
// it means reading a few megabytes, so each distinct set of inputs is built
// once and kept in a cache under the hash of its contents.
package initrd

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/cavaliergopher/cpio"

	"github.com/virt-sandbox/virt-sandbox/kmod"
)

// ModulesDir is where the modules are inside the initramfs. Their names
// start with their place in the load order, so the init loads them in
// lexical order.
const ModulesDir = "modules"

// Result describes the initrd Cached returned.
type Result struct {
	Path    string
	Built   bool          // false: it was in the cache
	Elapsed time.Duration // time spent building, when Built
}

// Cached returns an initrd holding init as /init and modules in order,
// building it in cacheDir unless an identical one is there. Concurrent
// callers are safe: each builds under a temporary name and renames.
func Cached(cacheDir, init string, modules []kmod.Module) (Result, error) {
	files := []entry{{name: "init", src: init, mode: 0o755}}
	for i, m := range modules {
		files = append(files, entry{name: path.Join(ModulesDir, fmt.Sprintf("%03d-%s", i, filepath.Base(m.Path))), src: m.Path, mode: 0o644})
	}
	key, err := hashOf(files)
	if err != nil {
		return Result{}, err
	}
	dst := filepath.Join(cacheDir, "initrd-"+key+".cpio")
	if _, err := os.Stat(dst); err == nil {
		return Result{Path: dst}, nil
	}
	start := time.Now()
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return Result{}, fmt.Errorf("initrd cache: %w", err)
	}
	tmp, err := os.CreateTemp(cacheDir, ".initrd-*")
	if err != nil {
		return Result{}, fmt.Errorf("initrd cache: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := write(tmp, files); err != nil {
		tmp.Close()
		return Result{}, fmt.Errorf("building initrd: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return Result{}, fmt.Errorf("building initrd: %w", err)
	}
	// Readable by QEMU whichever user it runs as.
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return Result{}, err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return Result{}, fmt.Errorf("initrd cache: %w", err)
	}
	return Result{Path: dst, Built: true, Elapsed: time.Since(start)}, nil
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
	if err := cw.WriteHeader(&cpio.Header{Name: ModulesDir, Mode: cpio.TypeDir | 0o755}); err != nil {
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
