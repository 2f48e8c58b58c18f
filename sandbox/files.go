package sandbox

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/virt-sandbox/virt-sandbox/config"
	"github.com/virt-sandbox/virt-sandbox/config/guest"
	"github.com/virt-sandbox/virt-sandbox/sandbox/fsimage"
)

// prepareFiles checks every host path the config names and completes the
// config for the run: temporary directories for empty host-bind sources,
// image formats and filesystems, include files staged in the state
// directory. Errors name the option and the path.
func (r *run) prepareFiles() error {
	r.resolved = guest.Resolved{MountFS: map[int]string{}, DiskDevices: map[int]string{}}
	if r.remote() {
		return r.prepareRemoteFiles()
	}
	cfg := r.cfg
	idmap, err := userNSMap(cfg)
	if err != nil {
		return err
	}
	r.resolved.IDMap = idmap
	if cfg.Root != "" {
		abs, err := filepath.Abs(cfg.Root)
		if err != nil {
			return err
		}
		cfg.Root = abs
		// Its mount points may be missing: the init makes them.
		if err := isDir(abs); err != nil {
			return fmt.Errorf("-r %s: %w", cfg.Root, err)
		}
	}
	for i := range cfg.Mounts {
		if err := r.prepareMount(i, &cfg.Mounts[i]); err != nil {
			m := cfg.Mounts[i]
			return fmt.Errorf("-m %s:%s: %w", m.Type, m.Target, stateError(err))
		}
	}
	if err := r.stageIncludes(); err != nil {
		return err
	}
	for i := range cfg.Disks {
		d := &cfg.Disks[i]
		if err := prepareImage(&d.Source, &d.Format); err != nil {
			return fmt.Errorf("--disk %s: %w", d.Tag, err)
		}
	}
	return nil
}

// stageIncludes copies the include files into the state directory, where
// the init finds them in the config share or receives them on the channel.
func (r *run) stageIncludes() error {
	for _, inc := range r.cfg.Includes {
		dst := filepath.Join(r.stateDir, guest.Includes, inc.Guest)
		if err := copyTree(inc.Host, dst); err != nil {
			return fmt.Errorf("-i %s=%s: %w", inc.Guest, inc.Host, stateError(err))
		}
	}
	return nil
}

func (r *run) prepareMount(i int, m *config.Mount) error {
	switch m.Type {
	case config.HostBind:
		if m.Source == "" {
			// A fresh directory that goes with the state directory
			// (a service's is made once and kept).
			m.Source = filepath.Join(r.stateDir, fmt.Sprintf("mount-%d", i))
			if err := os.MkdirAll(m.Source, 0o755); err != nil || r.resolved.IDMap == nil {
				return err
			}
			// The program's ids in a user namespace are not the
			// caller's, who may not give the directory away: it is
			// reached only through the sandbox.
			return os.Chmod(m.Source, 0o777)
		}
		abs, err := filepath.Abs(m.Source)
		if err != nil {
			return err
		}
		m.Source = abs
		return isDir(abs)
	case config.HostImage:
		if err := prepareImage(&m.Source, &m.Format); err != nil {
			return err
		}
		t, err := fsimage.Detect(m.Source, m.Format)
		if err != nil {
			return err
		}
		r.resolved.MountFS[i] = t
	}
	return nil
}

// prepareImage makes an image path absolute and its format known.
func prepareImage(src, format *string) error {
	abs, err := filepath.Abs(*src)
	if err != nil {
		return err
	}
	*src = abs
	fi, err := os.Stat(abs)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", abs)
	}
	found, err := fsimage.Format(abs)
	if err != nil {
		return err
	}
	if *format != "" && *format != found {
		return fmt.Errorf("%s: a %s image, not %s", abs, found, *format)
	}
	*format = found
	return nil
}

func isDir(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s: not a directory", p)
	}
	return nil
}

// copyTree copies a file, a symbolic link or a directory tree with their
// modes.
func copyTree(src, dst string) error {
	if _, err := os.Lstat(src); err != nil {
		return err
	}
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.Mkdir(to, fi.Mode().Perm()|0o700)
		case fi.Mode()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, to)
		case fi.Mode().IsRegular():
			return copyFile(p, to, fi.Mode().Perm())
		}
		return fmt.Errorf("%s: not a file, directory or symbolic link", p)
	})
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	return errors.Join(err, out.Close())
}
