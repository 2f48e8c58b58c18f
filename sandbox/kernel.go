package sandbox

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/virt-sandbox/virt-sandbox/config"
	"github.com/virt-sandbox/virt-sandbox/sandbox/lru"
	"github.com/virt-sandbox/virt-sandbox/sandbox/wholefile"
)

// kernel is the kernel a QEMU sandbox boots and its module tree.
type kernel struct {
	path    string
	version string
	modules string // the tree: modules.dep is in it
}

// findKernel resolves the kernel of k: --kernpath, else /boot/vmlinuz of
// --kernver, else of the running kernel, else the newest kernel in /boot
// whose modules are installed. Modules come from --kmodpath (a directory of
// trees like /lib/modules, or a tree itself).
func findKernel(k config.Kernel) (kernel, error) {
	modRoot := k.ModulesDir
	if modRoot == "" {
		modRoot = "/lib/modules"
	}
	kern := kernel{path: k.Path, version: k.Version}
	switch {
	case kern.path != "":
		if _, err := os.Stat(kern.path); err != nil {
			return kern, fmt.Errorf("kernel: %w", err)
		}
		if kern.version == "" {
			v, err := bzImageVersion(kern.path)
			if err != nil {
				return kern, fmt.Errorf("kernel %s: %w (give --kernver)", kern.path, err)
			}
			kern.version = v
		}
	case kern.version != "":
		kern.path = "/boot/vmlinuz-" + kern.version
		if _, err := os.Stat(kern.path); err != nil {
			return kern, fmt.Errorf("kernel: %w", err)
		}
	default:
		var uts unix.Utsname
		unix.Uname(&uts)
		running := unix.ByteSliceToString(uts.Release[:])
		candidates := append([]string{running}, installedKernels()...)
		for _, v := range candidates {
			p := "/boot/vmlinuz-" + v
			if fileExists(p) && (fileExists(filepath.Join(modRoot, v, "modules.dep")) || fileExists(filepath.Join(modRoot, "modules.dep"))) {
				kern.path, kern.version = p, v
				break
			}
		}
		if kern.path == "" {
			return kern, fmt.Errorf("no kernel found: neither /boot/vmlinuz-%s nor any /boot/vmlinuz-* with modules in %s (give --kernpath)", running, modRoot)
		}
	}
	kern.modules = filepath.Join(modRoot, kern.version)
	if fileExists(filepath.Join(modRoot, "modules.dep")) {
		kern.modules = modRoot
	}
	if !fileExists(filepath.Join(kern.modules, "modules.dep")) {
		return kern, fmt.Errorf("no modules.dep in %s for kernel %s (give --kmodpath)", kern.modules, kern.version)
	}
	return kern, nil
}

// installedKernels lists the versions of /boot/vmlinuz-*, newest first.
func installedKernels() []string {
	paths, _ := filepath.Glob("/boot/vmlinuz-*")
	var vs []string
	for _, p := range paths {
		vs = append(vs, strings.TrimPrefix(filepath.Base(p), "vmlinuz-"))
	}
	sort.Slice(vs, func(i, j int) bool { return versionLess(vs[j], vs[i]) })
	return vs
}

// versionLess orders kernel versions by their numeric fields.
func versionLess(a, b string) bool {
	fa, fb := strings.FieldsFunc(a, notDigit), strings.FieldsFunc(b, notDigit)
	for i := 0; i < len(fa) && i < len(fb); i++ {
		if len(fa[i]) != len(fb[i]) {
			return len(fa[i]) < len(fb[i])
		}
		if fa[i] != fb[i] {
			return fa[i] < fb[i]
		}
	}
	return len(fa) < len(fb)
}

func notDigit(r rune) bool { return r < '0' || r > '9' }

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// bzImageVersion reads the version string an x86 kernel image carries in
// its boot protocol header.
func bzImageVersion(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	hdr := make([]byte, 0x210)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		return "", fmt.Errorf("not a kernel image: %w", err)
	}
	if string(hdr[0x202:0x206]) != "HdrS" {
		return "", fmt.Errorf("not a bzImage kernel")
	}
	off := int64(hdr[0x20e]) | int64(hdr[0x20f])<<8
	buf := make([]byte, 256)
	n, _ := f.ReadAt(buf, off+0x200)
	v, _, _ := bytes.Cut(buf[:n], []byte{' '})
	v, _, _ = bytes.Cut(v, []byte{0})
	if len(v) == 0 {
		return "", fmt.Errorf("no version string in the kernel image")
	}
	return string(v), nil
}

// cachedKernel returns a copy of the kernel image in cacheDir, made once
// per image (keyed by its path, size and modification time). QEMU runs as
// the caller and libvirt hands it its files by changing their owner for the
// run; the caller's own copy keeps that away from the host's /boot. A copy
// is used only when it is the same as the image, so a truncated or damaged
// one is copied again; it gets its name only when complete and on disk.
func cachedKernel(cacheDir, path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("kernel: %w", err)
	}
	key := sha256.Sum256([]byte(fmt.Sprintf("%s\x00%d\x00%d", path, fi.Size(), fi.ModTime().UnixNano())))
	dst := filepath.Join(cacheDir, fmt.Sprintf("%s-%x", filepath.Base(path), key[:8]))
	if same, err := sameContent(dst, path); err != nil {
		return "", kernelReadError(err)
	} else if same {
		lru.Touch(dst)
		return dst, nil
	}
	src, err := os.Open(path)
	if err != nil {
		return "", kernelReadError(err)
	}
	defer src.Close()
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", cacheError("kernel cache", cacheDir, err)
	}
	err = wholefile.Write(dst, 0o644, func(w io.Writer) error {
		_, err := io.Copy(w, src)
		return err
	})
	if err != nil {
		return "", cacheError("kernel cache", cacheDir, err)
	}
	// Copies under way have hidden names (wholefile).
	paths, _ := filepath.Glob(filepath.Join(cacheDir, "[^.]*"))
	lru.Trim(paths, kernelCacheBudget, func(p string) { os.Remove(p) })
	return dst, nil
}

// kernelCacheBudget bounds the kernels' copies kept: each kernel upgrade
// makes one more.
const kernelCacheBudget = 128 << 20

// kernelReadError says what to do about a kernel the caller cannot read
// (some distributions install them 0600).
func kernelReadError(err error) error {
	if errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("kernel: %w (QEMU runs as you and reads it: make it readable, or give --kernpath a copy you can read)", err)
	}
	return fmt.Errorf("kernel: %w", err)
}

// sameContent tells whether the file copy has the content of orig; a copy
// that does not exist is not the same. Errors are orig's.
func sameContent(copy, orig string) (bool, error) {
	c, err := os.Open(copy)
	if err != nil {
		return false, nil
	}
	defer c.Close()
	o, err := os.Open(orig)
	if err != nil {
		return false, err
	}
	defer o.Close()
	ci, err1 := c.Stat()
	oi, err2 := o.Stat()
	if err1 != nil || err2 != nil || ci.Size() != oi.Size() || !ci.Mode().IsRegular() {
		return false, nil
	}
	cb, ob := make([]byte, 1<<16), make([]byte, 1<<16)
	for {
		n, err := io.ReadFull(o, ob)
		if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
			return false, err
		}
		if m, cerr := io.ReadFull(c, cb[:n]); cerr != nil || m != n || !bytes.Equal(cb[:n], ob[:n]) {
			return false, nil
		}
		if n < len(ob) {
			return true, nil
		}
	}
}

// cacheError names the cache directory, not the temporary file in it
// that the user never sees: "initrd cache DIR: no space left on device".
func cacheError(what, cacheDir string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		err = le.Err
	}
	return fmt.Errorf("%s %s: %w", what, cacheDir, err)
}
