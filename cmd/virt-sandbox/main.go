// Command virt-sandbox runs one program in a throw-away libvirt LXC container
// or QEMU machine, with its stdio, terminal and exit status wired to the
// caller as if it ran locally.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/virt-sandbox/virt-sandbox/cmd/internal/options"
	"github.com/virt-sandbox/virt-sandbox/sandbox"
	"github.com/virt-sandbox/virt-sandbox/sandbox/console"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// StatusLaunchFailed is the exit status when the sandbox could not be
// started, as in env(1) and container runtimes.
const StatusLaunchFailed = 125

func main() {
	os.Exit(run(os.Args, os.Stdin, os.Stdout, os.Stderr))
}

func init() {
	// -v is --verbose here, as in the original.
	cli.VersionFlag = &cli.BoolFlag{Name: "version", Usage: "print the version"}
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	status := 0
	app := &cli.App{
		Name:      "virt-sandbox",
		Usage:     "run a program in a throw-away libvirt LXC container or QEMU machine",
		UsageText: "virt-sandbox [OPTIONS] [--] COMMAND [ARGS...]",
		Description: "Runs COMMAND in a transient sandbox whose root is the host's / read-only. Its stdin, stdout,\n" +
			"stderr, terminal and exit status are the caller's. Exit status: the program's own; 128+N when\n" +
			"it was killed by signal N; 125 when the sandbox could not be started; 126 when the command\n" +
			"cannot be executed; 127 when it is not found.",
		Version:                version,
		Flags:                  options.Flags(),
		Reader:                 stdin,
		Writer:                 stdout,
		ErrWriter:              stderr,
		HideHelpCommand:        true,
		UseShortOptionHandling: true,
		// -e values may hold commas.
		DisableSliceFlagSeparator: true,
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return err
		},
		Action: func(c *cli.Context) error {
			cfg, err := options.Config(c, c.Args().Slice())
			if err != nil {
				return err
			}
			signals := make(chan os.Signal, 4)
			signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGWINCH)
			defer signal.Stop(signals)
			status, err = sandbox.Run(cfg, sandbox.IO{Stdin: stdin, Stdout: stdout, Stderr: stderr, Signals: signals})
			return err
		},
	}
	err := app.Run(args)
	if err == nil {
		return status
	}
	var failed *console.Failed
	if errors.As(err, &failed) {
		fmt.Fprintf(stderr, "virt-sandbox: %s\n", failed.Message)
		return failed.Status
	}
	fmt.Fprintf(stderr, "virt-sandbox: %v\n", err)
	switch {
	case errors.Is(err, sandbox.ErrDetached):
		return 128 + int(syscall.SIGKILL)
	case errors.Is(err, sandbox.ErrTimeout):
		// As timeout(1).
		return 124
	}
	return StatusLaunchFailed
}
