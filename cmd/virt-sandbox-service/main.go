// Command virt-sandbox-service keeps sandboxes running as services: a
// persistent libvirt domain per service, built from its saved config, with
// its program's output kept in a log, started, stopped, attached to and
// executed in on demand.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/virt-sandbox/virt-sandbox/cmd/internal/options"
	"github.com/virt-sandbox/virt-sandbox/config"
	"github.com/virt-sandbox/virt-sandbox/sandbox"
)

var version = "dev"

func main() {
	os.Exit(run(os.Args, os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	app := options.NewApp("virt-sandbox-service", "keep sandboxes running as services (LXC or QEMU)", version, stdin, stdout, stderr)
	// libvirt-sandbox's syntax: the connection before the subcommand.
	// create takes it from there too; the others act on the saved
	// service, whose URI decides.
	app.Flags = []cli.Flag{&cli.StringFlag{Name: "connect", Aliases: []string{"c"}, Usage: "libvirt `URI` of a service to create (as after create)"}}
	app.Commands = commands()
	if asked, err := options.Docs(app, args, stdout); asked {
		if err != nil {
			return options.ExitStatus(app.Name, err, stderr)
		}
		return 0
	}
	if err := app.Run(nameAfterOptions(args, flagTakesValue(app.Command("create")))); err != nil {
		return options.ExitStatus(app.Name, err, stderr)
	}
	return 0
}

// commands are the subcommands. Each action reads and writes the command's
// own streams (c.App.Reader, Writer, ErrWriter).
func commands() []*cli.Command {
	return []*cli.Command{
		{
			Name:      "create",
			Usage:     "save a new service and define its domain",
			ArgsUsage: "NAME [virt-sandbox options] -- COMMAND [ARGS...]",
			Flags: append(options.Flags(), &cli.StringFlag{
				Name:  "restart",
				Value: "no",
				Usage: "`POLICY`: no, or on-failure[:N] to restart a program that fails, with back-off, at most N times (default 5)",
			}),
			Action: create,
		},
		onService("start", "start a service", nil, byName(sandbox.Start)),
		onService("stop", "ask the service's program to end; destroy the sandbox if it has not within the timeout",
			[]cli.Flag{&cli.DurationFlag{Name: "timeout", Value: 10 * time.Second, Usage: "how long to wait"}},
			func(c *cli.Context, n string) error { return sandbox.Stop(n, c.Duration("timeout")) }),
		onService("restart", "stop, then start a service", nil, byName(restart)),
		onService("status", "show whether a service runs", nil, status),
		{
			Name:   "list",
			Usage:  "list the services",
			Flags:  []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "as JSON"}},
			Action: list,
		},
		onService("logs", "print the program's output, kept across restarts",
			[]cli.Flag{&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep printing what is appended"}},
			logs),
		onService("connect", "attach to the program's console; Ctrl-] detaches and the service keeps running", nil, connect),
		{
			Name:      "execute",
			Usage:     "run another command inside a running service, with its own stdio and exit status",
			ArgsUsage: "NAME -- COMMAND [ARGS...]",
			Flags: []cli.Flag{
				&cli.BoolFlag{Name: "tty", Aliases: []string{"t"}, Usage: "force a terminal"},
				&cli.BoolFlag{Name: "no-tty", Aliases: []string{"T"}, Usage: "force pipes"},
			},
			Action: execute,
		},
		onService("upgrade", "rebuild the service's domain from its saved config", nil, byName(sandbox.Upgrade)),
		onService("delete", "remove a service: domain, config and logs",
			[]cli.Flag{&cli.BoolFlag{Name: "force", Usage: "also when it runs (it is destroyed)"}},
			func(c *cli.Context, n string) error { return sandbox.Delete(n, c.Bool("force")) }),
		{
			Name:      "autostart",
			Usage:     "start the service with libvirt, or not",
			ArgsUsage: "NAME on|off",
			Action:    autostart,
		},
		onService("systemd-unit", "print a systemd unit that starts and stops the service, or install it",
			[]cli.Flag{&cli.BoolFlag{Name: "install", Usage: "write it to /etc/systemd/system (root) or ~/.config/systemd/user"}},
			func(c *cli.Context, n string) error { return systemdUnit(n, c.Bool("install"), c.App.Writer) }),
	}
}

// onService is a subcommand that acts on the service named by its one
// argument.
func onService(name, usage string, flags []cli.Flag, act func(c *cli.Context, name string) error) *cli.Command {
	return &cli.Command{
		Name:      name,
		Usage:     usage,
		ArgsUsage: "NAME",
		Flags:     flags,
		Action: func(c *cli.Context) error {
			if c.NArg() < 1 {
				return fmt.Errorf("%w: no service name given", config.ErrInvalid)
			}
			return act(c, c.Args().First())
		},
	}
}

// byName adapts an action that needs only the service's name.
func byName(act func(name string) error) func(*cli.Context, string) error {
	return func(_ *cli.Context, name string) error { return act(name) }
}

func create(c *cli.Context) error {
	args := c.Args().Slice()
	if len(args) < 1 {
		return fmt.Errorf("%w: no service name given", config.ErrInvalid)
	}
	cfg, err := options.Config(c, args[1:])
	if err != nil {
		return err
	}
	cfg.Name = args[0]
	cfg.TTY = false
	if cfg.Service, err = restartPolicy(c.String("restart")); err != nil {
		return err
	}
	return sandbox.Create(cfg)
}

func restart(name string) error {
	if err := sandbox.Stop(name, 10*time.Second); err != nil {
		return err
	}
	return sandbox.Start(name)
}

func status(c *cli.Context, name string) error {
	info, err := sandbox.Status(name)
	if err != nil {
		return err
	}
	if len(info.Addresses) > 0 {
		fmt.Fprintf(c.App.Writer, "%s: %s at %s\n", info.Name, info.State, strings.Join(info.Addresses, " "))
		return nil
	}
	fmt.Fprintf(c.App.Writer, "%s: %s\n", info.Name, info.State)
	return nil
}

func list(c *cli.Context) error {
	list, err := sandbox.List()
	if err != nil {
		return err
	}
	if c.Bool("json") {
		if list == nil {
			list = []sandbox.ServiceInfo{}
		}
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		return enc.Encode(list)
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tURI\tAUTOSTART\tRESTART\tCOMMAND")
	for _, s := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\t%s\n", s.Name, s.State, s.URI, s.Autostart, s.Restart, strings.Join(s.Command, " "))
	}
	return tw.Flush()
}

func logs(c *cli.Context, name string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return sandbox.Logs(ctx, name, c.Bool("follow"), c.App.Writer)
}

func connect(c *cli.Context, name string) error {
	fmt.Fprintf(c.App.ErrWriter, "connected to %s (Ctrl-] detaches)\r\n", name)
	return sandbox.Connect(name, sandbox.IO{Stdin: c.App.Reader, Stdout: c.App.Writer, Stderr: c.App.ErrWriter})
}

func execute(c *cli.Context) error {
	args := c.Args().Slice()
	if len(args) > 1 && args[1] == "--" {
		args = append(args[:1], args[2:]...)
	}
	if len(args) < 2 {
		return fmt.Errorf("%w: want NAME -- COMMAND", config.ErrInvalid)
	}
	signals, stop := options.Signals()
	defer stop()
	stdio := sandbox.IO{Stdin: c.App.Reader, Stdout: c.App.Writer, Stderr: c.App.ErrWriter, Signals: signals}
	return options.Finished(sandbox.Execute(args[0], args[1:], options.WantTTY(c), stdio))
}

func autostart(c *cli.Context) error {
	if c.NArg() != 2 || (c.Args().Get(1) != "on" && c.Args().Get(1) != "off") {
		return fmt.Errorf("%w: want NAME on|off", config.ErrInvalid)
	}
	return sandbox.SetAutostart(c.Args().First(), c.Args().Get(1) == "on")
}

// nameAfterOptions turns "create [options] NAME [options] -- COMMAND"
// into "create [options] [options] -- NAME COMMAND": flags parse up to the
// first argument that is not one, and the service's name sits among them.
// Without "--" after the name, all that follows it is the command. The
// options before the subcommand (-c URI) stay where they are. takesValue
// tells whether an option of create (by its name without dashes) takes the
// next argument as its value.
func nameAfterOptions(args []string, takesValue func(string) bool) []string {
	at := 1
	switch {
	case len(args) > 1 && (args[1] == "-c" || args[1] == "--connect"):
		at = 3
	case len(args) > 1 && strings.HasPrefix(args[1], "--connect="):
		at = 2
	}
	if len(args) < at+2 || args[at] != "create" {
		return args
	}
	i := at + 1
	for i < len(args) && strings.HasPrefix(args[i], "-") && args[i] != "--" {
		flag := strings.TrimLeft(args[i], "-")
		i++
		if !strings.Contains(flag, "=") && takesValue(flag) {
			i++
		}
	}
	if i >= len(args) || args[i] == "--" {
		return args
	}
	name, rest := args[i], args[i+1:]
	out := append(append([]string(nil), args[:i]...), rest...)
	if dash := slices.Index(out[i:], "--"); dash >= 0 {
		out = slices.Insert(out, i+dash+1, name)
		return out
	}
	return append(append(out[:i:i], "--", name), rest...)
}

// flagTakesValue tells, for the options of cmd, whether the one named
// name takes a value: all but the switches.
func flagTakesValue(cmd *cli.Command) func(string) bool {
	return func(name string) bool {
		for _, f := range cmd.Flags {
			if slices.Contains(f.Names(), name) {
				_, isSwitch := f.(*cli.BoolFlag)
				return !isSwitch
			}
		}
		return false
	}
}

// restartPolicy parses --restart: no, or on-failure[:N].
func restartPolicy(s string) (*config.Service, error) {
	policy, n, hasN := strings.Cut(s, ":")
	svc := &config.Service{Restart: policy}
	switch {
	case policy == "no" && !hasN:
		return svc, nil
	case policy == "on-failure":
		if hasN {
			max, err := strconv.Atoi(n)
			if err != nil || max < 1 {
				return nil, fmt.Errorf("%w: --restart %q: want a count of at least 1 after on-failure:", config.ErrInvalid, s)
			}
			svc.MaxRestarts = max
		}
		return svc, nil
	}
	return nil, fmt.Errorf("%w: --restart %q: want no or on-failure[:N]", config.ErrInvalid, s)
}
