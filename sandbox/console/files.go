package console

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// The run's files on the channel. A sandbox on a remote host shares no
// filesystem with the launcher, so the config and the include files the
// init reads from the config share locally come on the channel instead:
// the hello says they follow (its JSON's "files"), and the host sends them
// as a tar stream in Files frames, ended by FilesEnd, before any other
// frame. The guest extracts them where the config share would be. Tar,
// because it carries modes, directories and symbolic links, and both ends
// have it in the standard library.

// sendFiles sends r in Files frames and ends them with FilesEnd.
func sendFiles(w *Writer, r io.Reader) error {
	buf := make([]byte, MaxPayload)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if werr := w.Write(Files, buf[:n]); werr != nil {
				return fmt.Errorf("console: sending files: %w", werr)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("console: sending files: %w", err)
		}
	}
	if err := w.Write(FilesEnd, nil); err != nil {
		return fmt.Errorf("console: sending files: %w", err)
	}
	return nil
}

// filesReader reads the payloads of Files frames up to FilesEnd.
type filesReader struct {
	r    *Reader
	left []byte
	done bool
}

func (f *filesReader) Read(p []byte) (int, error) {
	for len(f.left) == 0 {
		if f.done {
			return 0, io.EOF
		}
		t, b, err := f.r.Next()
		if err == io.EOF {
			return 0, io.ErrUnexpectedEOF
		}
		if err != nil {
			return 0, err
		}
		switch t {
		case Files:
			f.left = b
		case FilesEnd:
			f.done = true
		default:
			return 0, fmt.Errorf("%w: %s among the files", ErrFrame, t)
		}
	}
	n := copy(p, f.left)
	f.left = f.left[n:]
	return n, nil
}

// WriteTree writes the named files and trees of dir to w as a tar stream;
// names that do not exist are left out.
func WriteTree(w io.Writer, dir string, names ...string) error {
	tw := tar.NewWriter(w)
	for _, name := range names {
		if _, err := os.Lstat(filepath.Join(dir, name)); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		err := filepath.WalkDir(filepath.Join(dir, name), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return addToTar(tw, dir, p)
		})
		if err != nil {
			return err
		}
	}
	return tw.Close()
}

func addToTar(tw *tar.Writer, dir, p string) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	link := ""
	if fi.Mode()&fs.ModeSymlink != 0 {
		if link, err = os.Readlink(p); err != nil {
			return err
		}
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return err
	}
	rel, err := filepath.Rel(dir, p)
	if err != nil {
		return err
	}
	hdr.Name = filepath.ToSlash(rel)
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return nil
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(tw, f)
	return err
}

// ExtractTree extracts a tar stream of WriteTree into root: directories,
// regular files and symbolic links, with their modes. root confines every
// entry, and a name that climbs out is refused. r is read to its end, past
// the archive's own.
func ExtractTree(r io.Reader, root *os.Root) error {
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			_, err = io.Copy(io.Discard, r)
			return err
		}
		if err != nil {
			return fmt.Errorf("the run's files: %w", err)
		}
		name := path.Clean(hdr.Name)
		if name == ".." || strings.HasPrefix(name, "../") || path.IsAbs(name) {
			return fmt.Errorf("the run's files: %q lies outside them", hdr.Name)
		}
		if err := extractEntry(tr, hdr, root, name); err != nil {
			return fmt.Errorf("the run's files: %s: %w", name, err)
		}
	}
}

func extractEntry(tr *tar.Reader, hdr *tar.Header, root *os.Root, name string) error {
	mode := fs.FileMode(hdr.Mode).Perm()
	if dir := path.Dir(name); dir != "." {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		if name == "." {
			return nil
		}
		if err := root.Mkdir(name, mode|0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		return nil
	case tar.TypeSymlink:
		return root.Symlink(hdr.Linkname, name)
	case tar.TypeReg:
		f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, tr)
		return errors.Join(err, f.Close())
	}
	return fmt.Errorf("not a file, directory or symbolic link (tar type %q)", hdr.Typeflag)
}
