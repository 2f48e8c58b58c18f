package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// StateRoot is where runs keep their state directories: per user, in
// memory, and removed at the end of each run.
func StateRoot() string {
	if os.Getuid() == 0 {
		return "/run/virt-sandbox"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "virt-sandbox")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("virt-sandbox-%d", os.Getuid()))
}

// InitPath finds the guest init binary: $VIRT_SANDBOX_INIT, beside the
// running executable, or the installed location.
func InitPath() (string, error) {
	if p := os.Getenv("VIRT_SANDBOX_INIT"); p != "" {
		return p, nil
	}
	var tried []string
	if exe, err := os.Executable(); err == nil {
		tried = append(tried, filepath.Join(filepath.Dir(exe), "virt-sandbox-init"))
	}
	tried = append(tried, "/usr/libexec/virt-sandbox/virt-sandbox-init")
	for _, p := range tried {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("cannot find virt-sandbox-init (tried %v; set VIRT_SANDBOX_INIT)", tried)
}

// prepareState makes the run's state directory and writes the config the
// init reads. The directory is private to the caller and named after the
// sandbox, so a second run under a running sandbox's name stops here.
func (r *run) prepareState() error {
	init, err := InitPath()
	if err != nil {
		return err
	}
	r.initPath = init
	root := StateRoot()
	if err := os.MkdirAll(root, 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	dir := filepath.Join(root, r.cfg.Name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("state directory: %w", err)
		}
		if r.nameInUse() {
			return fmt.Errorf("a sandbox named %q is already running", r.cfg.Name)
		}
		// Left by a launcher that was killed: its domain is gone.
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("removing stale state directory: %w", err)
		}
		if err := os.Mkdir(dir, 0o700); err != nil {
			return fmt.Errorf("state directory: %w", err)
		}
	}
	r.stateDir = dir
	r.onCleanup(func() { os.RemoveAll(dir) })
	return r.prepareFiles()
}

// nameInUse reports whether a domain of the sandbox's name is running.
func (r *run) nameInUse() bool {
	dom, err := r.conn.LookupDomainByName(r.cfg.Name)
	if err != nil {
		return false
	}
	defer dom.Free()
	active, err := dom.IsActive()
	return err == nil && active
}
