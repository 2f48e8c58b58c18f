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
	status := 0
	name := func(c *cli.Context) (string, error) {
		if c.NArg() < 1 {
			return "", fmt.Errorf("%w: no service name given", config.ErrInvalid)
		}
		return c.Args().First(), nil
	}
	simple := func(usage string, f func(string) error) *cli.Command {
		return &cli.Command{
			Usage:     usage,
			ArgsUsage: "NAME",
			Action: func(c *cli.Context) error {
				n, err := name(c)
				if err != nil {
					return err
				}
				return f(n)
			},
		}
	}
	cmd := func(c *cli.Command, name string) *cli.Command { c.Name = name; return c }
	app := options.NewApp("virt-sandbox-service", "keep sandboxes running as services (LXC or QEMU)", version, stdin, stdout, stderr)
	// libvirt-sandbox's syntax: the connection before the subcommand.
	// create takes it from there too; the others act on the saved
	// service, whose URI decides.
	app.Flags = []cli.Flag{&cli.StringFlag{Name: "connect", Aliases: []string{"c"}, Usage: "libvirt `URI` of a service to create (as after create)"}}
	app.Commands = []*cli.Command{
		{
			Name:      "create",
			Usage:     "save a new service and define its domain",
			ArgsUsage: "NAME [virt-sandbox options] -- COMMAND [ARGS...]",
			Flags: append(options.Flags(), &cli.StringFlag{
				Name:  "restart",
				Value: "no",
				Usage: "`POLICY`: no, or on-failure[:N] to restart a program that fails, with back-off, at most N times (default 5)",
			}),
			Action: func(c *cli.Context) error {
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
			},
		},
		cmd(simple("start a service", sandbox.Start), "start"),
		{
			Name:      "stop",
			Usage:     "ask the service's program to end; destroy the sandbox if it has not within the timeout",
			ArgsUsage: "NAME",
			Flags:     []cli.Flag{&cli.DurationFlag{Name: "timeout", Value: 10 * time.Second, Usage: "how long to wait"}},
			Action: func(c *cli.Context) error {
				n, err := name(c)
				if err != nil {
					return err
				}
				return sandbox.Stop(n, c.Duration("timeout"))
			},
		},
		cmd(simple("stop, then start a service", func(n string) error {
			if err := sandbox.Stop(n, 10*time.Second); err != nil {
				return err
			}
			return sandbox.Start(n)
		}), "restart"),
		cmd(simple("show whether a service runs", func(n string) error {
			info, err := sandbox.Status(n)
			if err != nil {
				return err
			}
			if len(info.Addresses) > 0 {
				fmt.Fprintf(stdout, "%s: %s at %s\n", info.Name, info.State, strings.Join(info.Addresses, " "))
				return nil
			}
			fmt.Fprintf(stdout, "%s: %s\n", info.Name, info.State)
			return nil
		}), "status"),
		{
			Name:  "list",
			Usage: "list the services",
			Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "as JSON"}},
			Action: func(c *cli.Context) error {
				list, err := sandbox.List()
				if err != nil {
					return err
				}
				if c.Bool("json") {
					if list == nil {
						list = []sandbox.ServiceInfo{}
					}
					enc := json.NewEncoder(stdout)
					enc.SetIndent("", "  ")
					return enc.Encode(list)
				}
				tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tSTATE\tURI\tAUTOSTART\tRESTART\tCOMMAND")
				for _, s := range list {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\t%s\n", s.Name, s.State, s.URI, s.Autostart, s.Restart, strings.Join(s.Command, " "))
				}
				return tw.Flush()
			},
		},
		{
			Name:      "logs",
			Usage:     "print the program's output, kept across restarts",
			ArgsUsage: "NAME",
			Flags:     []cli.Flag{&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep printing what is appended"}},
			Action: func(c *cli.Context) error {
				n, err := name(c)
				if err != nil {
					return err
				}
				ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
				defer stop()
				return sandbox.Logs(ctx, n, c.Bool("follow"), stdout)
			},
		},
		cmd(simple("attach to the program's console; Ctrl-] detaches and the service keeps running", func(n string) error {
			fmt.Fprintf(stderr, "connected to %s (Ctrl-] detaches)\r\n", n)
			return sandbox.Connect(n, sandbox.IO{Stdin: stdin, Stdout: stdout, Stderr: stderr})
		}), "connect"),
		{
			Name:      "execute",
			Usage:     "run another command inside a running service, with its own stdio and exit status",
			ArgsUsage: "NAME -- COMMAND [ARGS...]",
			Flags: []cli.Flag{
				&cli.BoolFlag{Name: "tty", Aliases: []string{"t"}, Usage: "force a terminal"},
				&cli.BoolFlag{Name: "no-tty", Aliases: []string{"T"}, Usage: "force pipes"},
			},
			Action: func(c *cli.Context) error {
				args := c.Args().Slice()
				if len(args) > 1 && args[1] == "--" {
					args = append(args[:1], args[2:]...)
				}
				if len(args) < 2 {
					return fmt.Errorf("%w: want NAME -- COMMAND", config.ErrInvalid)
				}
				tty := options.WantTTY(c)
				signals, stop := options.Signals()
				defer stop()
				var err error
				status, err = sandbox.Execute(args[0], args[1:], tty, sandbox.IO{Stdin: stdin, Stdout: stdout, Stderr: stderr, Signals: signals})
				return err
			},
		},
		cmd(simple("rebuild the service's domain from its saved config", sandbox.Upgrade), "upgrade"),
		{
			Name:      "delete",
			Usage:     "remove a service: domain, config and logs",
			ArgsUsage: "NAME",
			Flags:     []cli.Flag{&cli.BoolFlag{Name: "force", Usage: "also when it runs (it is destroyed)"}},
			Action: func(c *cli.Context) error {
				n, err := name(c)
				if err != nil {
					return err
				}
				return sandbox.Delete(n, c.Bool("force"))
			},
		},
		{
			Name:      "autostart",
			Usage:     "start the service with libvirt, or not",
			ArgsUsage: "NAME on|off",
			Action: func(c *cli.Context) error {
				if c.NArg() != 2 || (c.Args().Get(1) != "on" && c.Args().Get(1) != "off") {
					return fmt.Errorf("%w: want NAME on|off", config.ErrInvalid)
				}
				return sandbox.SetAutostart(c.Args().First(), c.Args().Get(1) == "on")
			},
		},
		{
			Name:      "systemd-unit",
			Usage:     "print a systemd unit that starts and stops the service, or install it",
			ArgsUsage: "NAME",
			Flags:     []cli.Flag{&cli.BoolFlag{Name: "install", Usage: "write it to /etc/systemd/system"}},
			Action: func(c *cli.Context) error {
				n, err := name(c)
				if err != nil {
					return err
				}
				return systemdUnit(n, c.Bool("install"), stdout)
			},
		},
	}
	if asked, err := options.Docs(app, args, stdout); asked {
		if err != nil {
			return options.ExitStatus(app.Name, err, stderr)
		}
		return 0
	}
	if err := app.Run(nameAfterOptions(args)); err != nil {
		return options.ExitStatus("virt-sandbox-service", err, stderr)
	}
	return status
}

// nameAfterOptions turns "create NAME [options] -- COMMAND" into
// "create [options] -- NAME COMMAND": flags parse up to the first argument
// that is not one, and the service's name comes first on the command line.
// The options before the subcommand (-c URI) stay where they are.
func nameAfterOptions(args []string) []string {
	at := 1
	switch {
	case len(args) > 1 && (args[1] == "-c" || args[1] == "--connect"):
		at = 3
	case len(args) > 1 && strings.HasPrefix(args[1], "--connect="):
		at = 2
	}
	if len(args) < at+2 || args[at] != "create" || strings.HasPrefix(args[at+1], "-") {
		return args
	}
	name, rest := args[at+1], args[at+2:]
	out := append(append([]string(nil), args[:at]...), "create")
	for i, a := range rest {
		if a == "--" {
			out = append(append(out, rest[:i]...), "--", name)
			return append(out, rest[i+1:]...)
		}
	}
	return append(append(out, "--", name), rest...)
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
