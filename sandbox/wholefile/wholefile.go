// Package wholefile writes files that are there whole or not at all: the
// content goes to a temporary file beside the destination, is made durable
// and only then gets its name. A reader (another run, the next boot) sees
// the old file or the whole new one, never a part, also after a crash or a
// full disk.
package wholefile

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Write fills a new file with fill and puts it at path with mode. Errors
// name path, never the temporary file, and leave nothing behind.
func Write(path string, mode os.FileMode, fill func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return pathError(path, err)
	}
	defer os.Remove(f.Name()) // gone by the rename when all went well
	err = fill(f)
	if err == nil {
		// Readable by whoever the mode says, whatever the umask.
		err = f.Chmod(mode)
	}
	if err == nil {
		// On disk before it has its name: after a crash the name must
		// not point at lost data.
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return pathError(path, err)
	}
	return nil
}

// WriteBytes writes b as the whole file at path.
func WriteBytes(path string, b []byte, mode os.FileMode) error {
	return Write(path, mode, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}

// pathError is err about path: the cause without the temporary file's
// name.
func pathError(path string, err error) error {
	var pe *fs.PathError
	var le *os.LinkError
	switch {
	case errors.As(err, &pe):
		err = pe.Err
	case errors.As(err, &le):
		err = le.Err
	}
	return &fs.PathError{Op: "write", Path: path, Err: err}
}
