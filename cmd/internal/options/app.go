package options

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
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

// ProgramStatus carries the exit status of a program a command ran to its
// end, from the command's action to its exit: ExitStatus prints nothing
// for it.
type ProgramStatus int

func (s ProgramStatus) Error() string {
	return fmt.Sprintf("the program exited with status %d", int(s))
}

// Finished is what an action returns after running a program: err when the
// program did not run to its end, else its status (nil for 0).
func Finished(status int, err error) error {
	if err != nil || status == 0 {
		return err
	}
	return ProgramStatus(status)
}

// ExitStatus reports err on one line and returns the exit status it stands
// for: a program that could not run carries its own, a time-out is 124, a
// detached terminal session 137 (its sandbox was killed), anything else a
// failure to start the sandbox.
func ExitStatus(prog string, err error, stderr io.Writer) int {
	var exited ProgramStatus
	if errors.As(err, &exited) {
		return int(exited)
	}
	var failed *console.Failed
	if errors.As(err, &failed) {
		fmt.Fprintf(stderr, "%s: %s\n", prog, failed.Message)
		return failed.Status
	}
	fmt.Fprintf(stderr, "%s: %s\n", prog, inUserWords(err))
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
	// A launcher whose stdout reader has gone must not die of SIGPIPE
	// with the sandbox and its state left behind: with SIGPIPE notified,
	// the write fails instead, and the relay passes SIGPIPE on to the
	// program.
	pipe := make(chan os.Signal, 1)
	signal.Notify(pipe, syscall.SIGPIPE)
	return ch, func() { signal.Stop(ch); signal.Stop(pipe) }
}

// cliFlagError is how the cli package reports a flag's bad value.
var cliFlagError = regexp.MustCompile(`^invalid value "(.*)" for flag -([^:]+): (.*)$`)

// inUserWords rewrites the cli package's report of a bad flag value in the
// words the user typed: --timeout "x": ..., not "flag -timeout".
func inUserWords(err error) string {
	m := cliFlagError.FindStringSubmatch(err.Error())
	if m == nil {
		return err.Error()
	}
	dashes := "--"
	if len(m[2]) == 1 {
		dashes = "-"
	}
	reason := m[3]
	if reason == "parse error" {
		reason = "not a number"
	}
	return fmt.Sprintf("%s%s %q: %s", dashes, m[2], m[1], reason)
}
