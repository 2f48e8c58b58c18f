package kmod

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// Load loads a module image, as returned by ReadModule, with init_module(2).
// params is the module's parameter string, e.g. "foo=1 bar=baz". A module
// that is already loaded is not an error. name is only used in errors; the
// kernel takes the module's name from the image.
func Load(name string, image []byte, params string) error {
	return loadError(name, unix.InitModule(image, params))
}

// loadHints explain the errnos init_module returns for common mistakes,
// since the errno text alone ("no such file or directory" for a missing
// symbol) is misleading and the details are only in the kernel log.
var loadHints = map[syscall.Errno]string{
	unix.ENOENT:       "unknown symbol: a dependency is not loaded; see the kernel log",
	unix.ENOEXEC:      "invalid module format: corrupt, or built for another kernel; see the kernel log",
	unix.EINVAL:       "invalid module or parameters; see the kernel log",
	unix.EPERM:        "needs CAP_SYS_MODULE, or module loading is disabled or locked down",
	unix.EKEYREJECTED: "signature rejected: unsigned or unknown key while signatures are enforced",
}

func loadError(name string, err error) error {
	if err == nil || errors.Is(err, unix.EEXIST) {
		return nil
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if hint, ok := loadHints[errno]; ok {
			return fmt.Errorf("kmod: loading %s: %w (%s)", name, err, hint)
		}
	}
	return fmt.Errorf("kmod: loading %s: %w", name, err)
}
