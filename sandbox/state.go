package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/virt-sandbox/virt-sandbox/sandbox/hostdirs"
)

// stateRoot is where runs keep their state directories: per user, in
// memory, and removed at the end of each run. $VIRT_SANDBOX_STATE_DIR,
// when set to an absolute path, chooses where it is for anyone: in a
// directory virt-sandbox of it, since runs remove what they find in the
// root that no run holds.
func stateRoot() string {
	if d := os.Getenv("VIRT_SANDBOX_STATE_DIR"); filepath.IsAbs(d) {
		return filepath.Join(d, "virt-sandbox")
	}
	return hostdirs.Runtime()
}

// InitPath finds the guest init binary: $VIRT_SANDBOX_INIT, else as
// helperPath finds it.
func InitPath() (string, error) {
	if p := os.Getenv("VIRT_SANDBOX_INIT"); p != "" {
		return p, nil
	}
	p, err := helperPath("virt-sandbox-init")
	if err != nil {
		return "", fmt.Errorf("%w; set VIRT_SANDBOX_INIT", err)
	}
	return p, nil
}

// helperPath finds one of our binaries that are not commands: beside the
// running executable (a build tree), in PREFIX/libexec/virt-sandbox for an
// executable in PREFIX/bin (make install), or the distribution's place.
func helperPath(name string) (string, error) {
	var tried []string
	if exe, err := os.Executable(); err == nil {
		dir := filepath.Dir(exe)
		tried = append(tried, filepath.Join(dir, name),
			filepath.Join(dir, "..", "libexec", "virt-sandbox", name))
	}
	tried = append(tried, filepath.Join("/usr/libexec/virt-sandbox", name))
	for _, p := range tried {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("cannot find %s (tried %v)", name, tried)
}

// prepareState makes the run's state directory and writes the config the
// init reads. The directory is private to the caller and named after the
// sandbox, so a second run under a running sandbox's name stops here. The
// run holds a lock on it until it is removed: a directory nobody holds was
// left by a launcher that was killed, and the next run sweeps it away.
func (r *oneShot) prepareState() error {
	init, err := InitPath()
	if err != nil {
		return err
	}
	r.initPath = init
	root := stateRoot()
	if err := os.MkdirAll(root, 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	if err := checkPrivate(root); err != nil {
		return err
	}
	sweepStale(root)
	rootLock, err := lockPath(root, unix.LOCK_SH)
	if err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	defer rootLock.Close()
	dir := filepath.Join(root, r.cfg.Name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("state directory %s: %w", root, errors.Unwrap(err))
		}
		if !removeStale(dir) {
			return fmt.Errorf("a sandbox named %q is already running", r.cfg.Name)
		}
		if err := os.Mkdir(dir, 0o700); err != nil {
			return fmt.Errorf("state directory %s: %w", root, errors.Unwrap(err))
		}
	}
	held, err := lockPath(dir, unix.LOCK_EX|unix.LOCK_NB)
	if err != nil {
		os.Remove(dir)
		return fmt.Errorf("state directory: %w", err)
	}
	r.stateDir = dir
	r.onCleanup(func() {
		os.RemoveAll(dir)
		held.Close()
	})
	return r.prepareFiles()
}

// checkPrivate refuses a state root that another user could change: in a
// shared temporary directory (a caller without $XDG_RUNTIME_DIR) anyone
// may have made it first, and it holds the programs' arguments and
// environment.
func checkPrivate(root string) error {
	var st unix.Stat_t
	if err := unix.Lstat(root, &st); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || int(st.Uid) != os.Geteuid() || st.Mode&0o022 != 0 {
		return fmt.Errorf("state directory %s: not a private directory of yours (owner uid %d, mode %04o): remove it, or set VIRT_SANDBOX_STATE_DIR", root, st.Uid, st.Mode&0o7777)
	}
	return nil
}

// stateError names the state directory, not the file of the run's own
// directory that could not be written ("state directory /run/virt-sandbox:
// no space left on device"): the run's directory is gone when the user
// reads it.
func stateError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) && strings.HasPrefix(pe.Path, stateRoot()+"/") {
		return fmt.Errorf("state directory %s: %w", stateRoot(), pe.Err)
	}
	return err
}

// lockPath opens path and takes a flock of kind how on it.
func lockPath(path string, how int) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// sweepStale removes the state directories under root that no run holds:
// those of launchers that were killed (SIGKILL leaves no chance to clean
// up), with the program's arguments and environment in their config.
// Runs making their directory hold root shared; the sweep takes it
// exclusively, or leaves the sweep to a later run, so it never sees a
// directory that is made but not yet held.
func sweepStale(root string) {
	lock, err := lockPath(root, unix.LOCK_EX|unix.LOCK_NB)
	if err != nil {
		return
	}
	defer lock.Close()
	entries, _ := os.ReadDir(root)
	for _, e := range entries {
		removeStale(filepath.Join(root, e.Name()))
	}
}

// removeStale removes a state directory that no run holds, and what
// libvirt left of its container; it tells whether it did.
func removeStale(dir string) bool {
	held, err := lockPath(dir, unix.LOCK_EX|unix.LOCK_NB)
	if err != nil {
		return false
	}
	defer held.Close()
	os.RemoveAll(dir)
	removeLXCLeftovers(filepath.Base(dir))
	return true
}
