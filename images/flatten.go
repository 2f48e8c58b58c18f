package images

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrUnsafe is wrapped by the error for every layer entry that is refused
// because it would reach outside the directory being built: a name with
// ".." leading out, a hard link to something that is not in the directory.
var ErrUnsafe = errors.New("unsafe layer entry")

const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh." // aufs bookkeeping, never content
	whiteoutOpaque = ".wh..wh..opq"
)

// applier applies layers to one directory. The directories on the way to
// an entry are resolved first (resolveDir), and the last component of a
// name is never followed: the *at system calls work on the parent
// directory's descriptor with AT_SYMLINK_NOFOLLOW or O_NOFOLLOW. All access
// goes through an os.Root besides, which would refuse to leave it.
type applier struct {
	root       *os.Root
	escapes    error // os.Root's own "path escapes" error value
	privileged bool  // euid 0: set owners, make device nodes

	// dirs holds the mode and times of directories, set at the end:
	// setting a directory's mode early could lock us out of it (0555
	// when not root), and adding entries changes its mtime.
	dirs map[string]dirMeta

	// layer holds the names the current layer has, and their parents:
	// an opaque directory hides only what lower layers put in it.
	layer map[string]struct{}
}

type dirMeta struct {
	mode         uint32
	atime, mtime time.Time
}

func newApplier(dir string) (*applier, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	// os.Root reports a name leading out of it with an unexported error
	// value; take that very value so that errors.Is tells a refusal from
	// other failures. If its wording ever changes, refusals still happen
	// and only lose the ErrUnsafe mark, which the tests would notice.
	escapes := errors.New("no escape error")
	var pe *os.PathError
	if _, err := root.Lstat(".."); errors.As(err, &pe) && strings.Contains(pe.Err.Error(), "escapes") {
		escapes = pe.Err
	}
	return &applier{
		root:       root,
		escapes:    escapes,
		privileged: os.Geteuid() == 0,
		dirs:       map[string]dirMeta{},
	}, nil
}

func (a *applier) close() { a.root.Close() }

func (a *applier) applyCompressed(r io.Reader) error {
	rc, _, err := decompress(r)
	if err != nil {
		return err
	}
	defer rc.Close()
	return a.apply(rc)
}

// apply applies one uncompressed tar layer.
func (a *applier) apply(r io.Reader) error {
	a.layer = map[string]struct{}{}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("reading tar: %w", err)
		}
		if err := a.entry(hdr, tr); err != nil {
			return fmt.Errorf("entry %q: %w", hdr.Name, err)
		}
	}
	// Read past the end-of-archive blocks, so a decompressor checks its
	// checksum and a caller hashing the stream hashes all of it.
	_, err := io.Copy(io.Discard, r)
	return err
}

// cleanName makes a tar name relative to the root. A leading "/" is
// dropped, as docker does; ".." leading out is refused.
func cleanName(n string) (string, error) {
	if strings.IndexByte(n, 0) >= 0 {
		return "", errors.New("name contains NUL")
	}
	p := strings.TrimLeft(n, "/")
	if p == "" {
		return ".", nil
	}
	p = path.Clean(p)
	if p == ".." || strings.HasPrefix(p, "../") {
		return "", fmt.Errorf("%w: name leads out of the root", ErrUnsafe)
	}
	return p, nil
}

// entry applies one tar entry: a whiteout, or a file made in place of
// whatever the lower layers have at its path.
func (a *applier) entry(hdr *tar.Header, r io.Reader) error {
	p, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if p == "." {
		if hdr.Typeflag == tar.TypeDir {
			a.dirs["."] = meta(hdr)
		}
		return nil
	}
	parent, base := path.Dir(p), path.Base(p)
	if parent, err = a.resolveDir(parent); err != nil {
		return err
	}
	p = path.Join(parent, base)
	if marker, err := a.whiteoutEntry(parent, base, p); marker {
		return err
	}
	if skip, err := a.skipped(hdr.Typeflag); skip || err != nil {
		return err
	}
	// A hard link's target is checked before anything is changed, so a
	// refused link leaves the root as it was.
	var target *linkTarget
	if hdr.Typeflag == tar.TypeLink {
		if target, err = a.findLinkTarget(hdr.Linkname, p); err != nil || target == nil {
			return err
		}
		defer target.dir.Close()
	}
	pdir, err := a.openDir(parent, true)
	if err != nil {
		return err
	}
	defer pdir.Close()
	pfd := int(pdir.Fd())
	a.mark(p)
	if err := a.clear(pfd, base, p, hdr.Typeflag == tar.TypeDir); err != nil {
		return err
	}
	return a.create(pfd, base, p, hdr, target, r)
}

// whiteoutEntry applies the entry at p if it is a whiteout or other aufs
// marker, and tells whether it was one.
func (a *applier) whiteoutEntry(parent, base, p string) (marker bool, err error) {
	switch {
	case base == whiteoutOpaque:
		return true, a.opaque(parent)
	case strings.HasPrefix(base, whiteoutMeta) || strings.Contains("/"+p, "/"+whiteoutMeta):
		return true, nil // aufs bookkeeping such as .wh..wh.plnk/, never content
	case strings.HasPrefix(base, whiteoutPrefix):
		return true, a.whiteout(parent, strings.TrimPrefix(base, whiteoutPrefix))
	}
	return false, nil
}

// skipped tells whether entries of type typ are left out, or refuses an
// unsupported type.
func (a *applier) skipped(typ byte) (bool, error) {
	switch typ {
	case tar.TypeReg, '\x00', tar.TypeCont, tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeFifo:
		return false, nil
	case tar.TypeChar, tar.TypeBlock:
		return !a.privileged, nil // only root may make device nodes
	case tar.TypeXGlobalHeader:
		return true, nil
	}
	return false, fmt.Errorf("unsupported entry type %q", typ)
}

// linkTarget is a hard link's target: its directory, open, and its name
// there.
type linkTarget struct {
	dir  *os.File
	base string
}

// findLinkTarget finds the target of a hard link at p to name, which must be
// in the root already and not a directory. It is nil for a link to itself,
// which is what is there already.
func (a *applier) findLinkTarget(name, p string) (*linkTarget, error) {
	t, err := cleanName(name)
	if err != nil {
		return nil, fmt.Errorf("hard link target %q: %w", name, err)
	}
	tdir, err := a.resolveDir(path.Dir(t))
	if err != nil {
		return nil, fmt.Errorf("hard link target %q: %w", name, err)
	}
	if t = path.Join(tdir, path.Base(t)); t == p {
		return nil, nil
	}
	dir, err := a.openDir(tdir, false)
	if err != nil {
		return nil, fmt.Errorf("hard link target %q: %w", name, err)
	}
	target := &linkTarget{dir: dir, base: path.Base(t)}
	if err := checkLinkTarget(dir, target.base, name); err != nil {
		dir.Close()
		return nil, err
	}
	return target, nil
}

// checkLinkTarget refuses a hard link target, base in dir, that is not
// there or is a directory.
func checkLinkTarget(dir *os.File, base, name string) error {
	var st unix.Stat_t
	switch err := unix.Fstatat(int(dir.Fd()), base, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case err == unix.ENOENT:
		return fmt.Errorf("%w: hard link target %q is not in the root", ErrUnsafe, name)
	case err != nil:
		return fmt.Errorf("hard link target %q: %w", name, err)
	case st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return fmt.Errorf("hard link target %q is a directory", name)
	}
	return nil
}

// clear removes whatever is at base in the directory pfd (p in the root)
// without following it: a symlink from a lower layer must not redirect the
// entry. A directory stays for a directory entry: directories merge.
func (a *applier) clear(pfd int, base, p string, isDir bool) error {
	var st unix.Stat_t
	switch err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case err == unix.ENOENT:
		return nil
	case err != nil:
		return err
	case isDir && st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return nil
	}
	return a.remove(p, st.Mode&unix.S_IFMT == unix.S_IFDIR)
}

// create makes the entry hdr at base in the directory pfd (p in the root),
// with its owner, mode and times; target is a hard link's.
func (a *applier) create(pfd int, base, p string, hdr *tar.Header, target *linkTarget, r io.Reader) error {
	mode := uint32(hdr.Mode) & 0o7777
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := unix.Mkdirat(pfd, base, 0o700); err != nil && err != unix.EEXIST {
			return fmt.Errorf("mkdir: %w", err)
		}
		if err := a.chown(pfd, base, hdr); err != nil {
			return err
		}
		if err := a.dirXattrs(pfd, base, hdr); err != nil {
			return err
		}
		a.dirs[p] = meta(hdr)
		return nil
	case tar.TypeSymlink:
		if err := unix.Symlinkat(hdr.Linkname, pfd, base); err != nil {
			return fmt.Errorf("symlink: %w", err)
		}
		if err := a.chown(pfd, base, hdr); err != nil {
			return err
		}
	case tar.TypeLink:
		// Flags 0: a link to a symlink links the symlink, never what
		// it points to.
		if err := unix.Linkat(int(target.dir.Fd()), target.base, pfd, base, 0); err != nil {
			return fmt.Errorf("link: %w", err)
		}
		return nil // the target's owner, mode and times are the link's
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		if made, err := a.mknod(pfd, base, mode, hdr); !made || err != nil {
			return err
		}
	default: // regular file
		if err := a.writeFile(pfd, base, mode, hdr, r); err != nil {
			return err
		}
	}
	return setTimes(pfd, base, hdr.AccessTime, hdr.ModTime)
}

// mknod makes the device node or FIFO hdr at base in the directory pfd,
// and tells whether it did: root in a user namespace may not make devices.
func (a *applier) mknod(pfd int, base string, mode uint32, hdr *tar.Header) (bool, error) {
	typ := map[byte]uint32{tar.TypeChar: unix.S_IFCHR, tar.TypeBlock: unix.S_IFBLK, tar.TypeFifo: unix.S_IFIFO}[hdr.Typeflag]
	dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	if err := unix.Mknodat(pfd, base, typ|0o600, int(dev)); err != nil {
		if err == unix.EPERM && typ != unix.S_IFIFO {
			return false, nil
		}
		return false, fmt.Errorf("mknod: %w", err)
	}
	if err := a.chown(pfd, base, hdr); err != nil {
		return false, err
	}
	// Not a symlink (just made), so following is harmless.
	if err := unix.Fchmodat(pfd, base, mode, 0); err != nil {
		return false, fmt.Errorf("chmod: %w", err)
	}
	return true, nil
}

func (a *applier) writeFile(pfd int, base string, mode uint32, hdr *tar.Header, r io.Reader) error {
	// O_EXCL|O_NOFOLLOW: whatever was there is gone; if something
	// appeared meanwhile, fail rather than write through it.
	fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	f := os.NewFile(uintptr(fd), base)
	defer f.Close()
	if _, err := io.Copy(f, r); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	// Owner first: chown clears the setuid and setgid bits.
	if a.privileged {
		if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	// Last: writing and chown drop security.capability.
	if err := setXattrs(fd, hdr); err != nil {
		return err
	}
	return f.Close()
}

func (a *applier) chown(pfd int, base string, hdr *tar.Header) error {
	if !a.privileged {
		return nil
	}
	if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	return nil
}

func (a *applier) dirXattrs(pfd int, base string, hdr *tar.Header) error {
	if !hasXattrs(hdr) {
		return nil
	}
	fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return setXattrs(fd, hdr)
}

const paxXattr = "SCHILY.xattr."

func hasXattrs(hdr *tar.Header) bool {
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, paxXattr) {
			return true
		}
	}
	return false
}

// setXattrs sets the extended attributes a layer records, where the file
// system and our privileges allow: images carry security.capability and
// the like that an unprivileged store cannot set and need not fail on.
func setXattrs(fd int, hdr *tar.Header) error {
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, paxXattr)
		if !ok {
			continue
		}
		// overlayfs's own attributes would change what the root means
		// when it is used as an overlay's lower directory.
		if strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay.") {
			continue
		}
		switch err := unix.Fsetxattr(fd, name, []byte(v), 0); err {
		case nil, unix.EPERM, unix.ENOTSUP, unix.EACCES, unix.EINVAL:
		default:
			return fmt.Errorf("setxattr %s: %w", name, err)
		}
	}
	return nil
}

func setTimes(pfd int, base string, atime, mtime time.Time) error {
	if atime.IsZero() {
		atime = mtime
	}
	ts := []unix.Timespec{timespec(atime), timespec(mtime)}
	switch err := unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW); err {
	case nil, unix.EINVAL, unix.EOVERFLOW:
		// Times the file system cannot hold are not worth failing for.
		return nil
	default:
		return fmt.Errorf("set times: %w", err)
	}
}

func timespec(t time.Time) unix.Timespec {
	return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}

func meta(hdr *tar.Header) dirMeta {
	return dirMeta{mode: uint32(hdr.Mode) & 0o7777, atime: hdr.AccessTime, mtime: hdr.ModTime}
}

// openDir opens directory p of the root, making it and its parents first if
// create is set. Symlinks on the way are followed only inside the root.
func (a *applier) openDir(p string, create bool) (*os.File, error) {
	if create && p != "." {
		if err := a.root.MkdirAll(p, 0o755); err != nil {
			return nil, a.refusal(err)
		}
	}
	f, err := a.openDirectory(p)
	if err != nil {
		if !create && errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s is not in the root", ErrUnsafe, p)
		}
		return nil, a.refusal(err)
	}
	if fi, err := f.Stat(); err != nil || !fi.IsDir() {
		f.Close()
		return nil, fmt.Errorf("%s is not a directory", p)
	}
	return f, nil
}

// maxSymlinks bounds the symlinks followed for one name, as Linux's
// MAXSYMLINKS does: more mean a loop.
const maxSymlinks = 40

// resolveDir returns directory p, a clean name relative to the root, with
// the symlinks among its components replaced by what they point to, as if
// the root were /: an absolute target starts again at the root, ".." stops
// at it. Components that do not exist (yet) are kept as they are. The
// result names no symlink, so os.Root has none to follow.
func (a *applier) resolveDir(p string) (string, error) {
	var done []string // resolved components, none of them a symlink
	todo := strings.Split(p, "/")
	links := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(done) > 0 {
				done = done[:len(done)-1]
			}
			continue
		}
		cur := path.Join(append(done, c)...)
		fi, err := a.root.Lstat(cur)
		switch {
		case errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOTDIR):
		case err != nil:
			return "", a.refusal(err)
		case fi.Mode()&os.ModeSymlink != 0:
			if links++; links > maxSymlinks {
				return "", fmt.Errorf("%s: too many levels of symbolic links", p)
			}
			target, err := a.root.Readlink(cur)
			if err != nil {
				return "", a.refusal(err)
			}
			if path.IsAbs(target) {
				done = nil
			}
			todo = append(strings.Split(target, "/"), todo...)
			continue
		}
		done = append(done, c)
	}
	if len(done) == 0 {
		return ".", nil
	}
	return path.Join(done...), nil
}

// refusal marks os.Root's refusals to leave the root with ErrUnsafe.
func (a *applier) refusal(err error) error {
	if errors.Is(err, a.escapes) {
		return fmt.Errorf("%w: a symlink on the way leads out of the root (%v)", ErrUnsafe, err)
	}
	return err
}

// mark records that this layer has p, and so its parents.
func (a *applier) mark(p string) {
	for q := p; q != "."; q = path.Dir(q) {
		if _, ok := a.layer[q]; ok {
			break
		}
		a.layer[q] = struct{}{}
	}
}

// remove removes p, all of it if it is a directory, never following a
// symlink at its end.
func (a *applier) remove(p string, dir bool) error {
	if err := a.root.RemoveAll(p); err != nil {
		return a.refusal(err)
	}
	delete(a.dirs, p)
	if dir {
		for q := range a.dirs {
			if strings.HasPrefix(q, p+"/") {
				delete(a.dirs, q)
			}
		}
	}
	return nil
}

// whiteout deletes name in parent, as lower layers left it.
func (a *applier) whiteout(parent, name string) error {
	if name == "" || name == "." || name == ".." {
		return fmt.Errorf("%w: whiteout of %q", ErrUnsafe, name)
	}
	a.mark(parent)
	p := path.Join(parent, name)
	if _, ok := a.layer[p]; ok {
		return nil // this layer's own p is above its whiteout
	}
	fi, err := a.root.Lstat(p)
	switch {
	case errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOTDIR):
		return nil // nothing to delete
	case err != nil:
		return a.refusal(err)
	}
	return a.remove(p, fi.IsDir())
}

// opaque hides what lower layers put in directory d: it deletes all of d
// that this layer does not have, whether its entries come before or after
// the marker.
func (a *applier) opaque(d string) error {
	a.mark(d)
	fi, err := a.root.Lstat(d)
	switch {
	case errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOTDIR):
		return nil
	case err != nil:
		return a.refusal(err)
	case !fi.IsDir():
		// The layer will (or did) put a directory here; what is there now
		// is lower content.
		return a.remove(d, false)
	}
	return a.hide(d)
}

func (a *applier) hide(d string) error {
	f, err := a.openDirectory(d)
	if err != nil {
		return a.refusal(err)
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return err
	}
	for _, n := range names {
		q := path.Join(d, n)
		fi, err := a.root.Lstat(q)
		if err != nil {
			return a.refusal(err)
		}
		if _, ok := a.layer[q]; !ok {
			if err := a.remove(q, fi.IsDir()); err != nil {
				return err
			}
			continue
		}
		// This layer has q; if it is a directory, lower content in it
		// is hidden all the same.
		if fi.IsDir() {
			if err := a.hide(q); err != nil {
				return err
			}
		}
	}
	return nil
}

// finish sets the directories' modes and times, deepest first, so that a
// parent's mode never keeps us from a child.
func (a *applier) finish() error {
	paths := make([]string, 0, len(a.dirs))
	for p := range a.dirs {
		paths = append(paths, p)
	}
	depth := func(p string) int {
		if p == "." {
			return -1
		}
		return strings.Count(p, "/")
	}
	sort.Slice(paths, func(i, j int) bool { return depth(paths[i]) > depth(paths[j]) })
	for _, p := range paths {
		m := a.dirs[p]
		pdir, err := a.openDirectory(path.Dir(p))
		if err != nil {
			continue // replaced since by something that is not a directory
		}
		pfd, base := int(pdir.Fd()), path.Base(p)
		var st unix.Stat_t
		if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			pdir.Close()
			continue
		}
		// A directory, not a symlink: following is harmless.
		err = unix.Fchmodat(pfd, base, m.mode, 0)
		if err == nil {
			err = setTimes(pfd, base, m.atime, m.mtime)
		}
		pdir.Close()
		if err != nil {
			return fmt.Errorf("directory %s: %w", p, err)
		}
	}
	return nil
}

// openDirectory opens directory p, never anything else: opening a FIFO
// would block, and opening a device node could do anything.
func (a *applier) openDirectory(p string) (*os.File, error) {
	return a.root.OpenFile(p, os.O_RDONLY|unix.O_DIRECTORY, 0)
}
