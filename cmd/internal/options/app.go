package options

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/virt-sandbox/virt-sandbox/sandbox"
	"github.com/virt-sandbox/virt-sandbox/sandbox/console"
)

// Exit statuses of the commands, beside the program's own (DESIGN.md).
const (
	StatusTimedOut     = 124 // as timeout(1)
	StatusLaunchFailed = 125 // the sandbox could not be started
)

func init() {
	// -v is --verbose in these commands, as in the original.
	cli.VersionFlag = &cli.BoolFlag{Name: "version", Usage: "print the version"}
}

// NewApp is a command with the settings they all share: one-line usage
// errors, -e values that may hold commas, combined short flags.
func NewApp(name, usage, version string, stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:                      name,
		Usage:                     usage,
		Version:                   version,
		Reader:                    stdin,
		Writer:                    stdout,
		ErrWriter:                 stderr,
		HideHelpCommand:           true,
		UseShortOptionHandling:    true,
		DisableSliceFlagSeparator: true,
		OnUsageError:              func(_ *cli.Context, err error, _ bool) error { return err },
	}
}

// ExitStatus reports err on one line and returns the exit status it stands
// for: a program that could not run carries its own, a time-out is 124, a
// detached terminal session 137 (its sandbox was killed), anything else a
// failure to start the sandbox.
func ExitStatus(prog string, err error, stderr io.Writer) int {
	var failed *console.Failed
	if errors.As(err, &failed) {
		fmt.Fprintf(stderr, "%s: %s\n", prog, failed.Message)
		return failed.Status
	}
	fmt.Fprintf(stderr, "%s: %v\n", prog, err)
	switch {
	case errors.Is(err, sandbox.ErrTimeout):
		return StatusTimedOut
	case errors.Is(err, sandbox.ErrDetached):
		return 128 + int(syscall.SIGKILL)
	}
	return StatusLaunchFailed
}

// Signals delivers the caller's signals a sandbox forwards or acts on, until
// stop is called.
func Signals() (signals <-chan os.Signal, stop func()) {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGWINCH)
	return ch, func() { signal.Stop(ch) }
}
