// Command virt-sandbox runs one program in a throw-away libvirt LXC container
// or QEMU machine, with its stdio, terminal and exit status wired to the
// caller as if it ran locally.
package main

import (
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/virt-sandbox/virt-sandbox/cmd/internal/options"
	"github.com/virt-sandbox/virt-sandbox/sandbox"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args, os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	app := options.NewApp("virt-sandbox", "run a program in a throw-away libvirt LXC container or QEMU machine", version, stdin, stdout, stderr)
	app.UsageText = "virt-sandbox [OPTIONS] [--] COMMAND [ARGS...]"
	app.Flags = options.Flags()
	app.Description = "Runs COMMAND in a transient sandbox whose root is the host's / read-only. Its stdin, stdout,\n" +
		"stderr, terminal and exit status are the caller's. Exit status: the program's own; 128+N when\n" +
		"it was killed by signal N; 125 when the sandbox could not be started or the program's user\n" +
		"cannot enter its working directory; 126 when the command cannot be executed; 127 when it is\n" +
		"not found; 124 when --timeout expired."
	app.Action = runProgram
	if asked, err := options.Docs(app, args, stdout); asked {
		if err != nil {
			return options.ExitStatus(app.Name, err, stderr)
		}
		return 0
	}
	if err := app.Run(args); err != nil {
		return options.ExitStatus("virt-sandbox", err, stderr)
	}
	return 0
}

func runProgram(c *cli.Context) error {
	cfg, err := options.Config(c, c.Args().Slice())
	if err != nil {
		return err
	}
	signals, stop := options.Signals()
	defer stop()
	return options.Finished(sandbox.Run(cfg, sandbox.IO{Stdin: c.App.Reader, Stdout: c.App.Writer, Stderr: c.App.ErrWriter, Signals: signals}))
}
