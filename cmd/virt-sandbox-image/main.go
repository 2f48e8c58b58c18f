// Command virt-sandbox-image runs Docker and OCI images through libvirt, with
// no Docker or podman: it pulls or loads them into a local store and runs
// them in LXC or QEMU sandboxes with their entrypoint, environment, working
// directory and user.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/virt-sandbox/virt-sandbox/cmd/internal/options"
	"github.com/virt-sandbox/virt-sandbox/config"
	"github.com/virt-sandbox/virt-sandbox/images"
	"github.com/virt-sandbox/virt-sandbox/sandbox"
)

var version = "dev"

func main() {
	os.Exit(run(os.Args, os.Stdin, os.Stdout, os.Stderr))
}

// pullFlags are the registry options of pull and run.
func pullFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "platform", Usage: "`OS/ARCH[/VARIANT]` to pick from a multi-platform image (default this host's)"},
		&cli.BoolFlag{Name: "insecure", Usage: "allow a plain-http registry"},
	}
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	app := options.NewApp("virt-sandbox-image", "run Docker/OCI images in libvirt sandboxes, without Docker", version, stdin, stdout, stderr)
	app.Flags = []cli.Flag{&cli.StringFlag{
		Name:  "store",
		Usage: "the image store's `DIR` (or set $VIRT_SANDBOX_IMAGE_STORE)",
		Value: images.DefaultDir(),
	}}
	app.Commands = commands()
	if asked, err := options.Docs(app, args, stdout); asked {
		if err != nil {
			return options.ExitStatus(app.Name, err, stderr)
		}
		return 0
	}
	if err := app.RunContext(ctx, args); err != nil {
		return options.ExitStatus(app.Name, err, stderr)
	}
	return 0
}

// commands are the subcommands. Each action reads and writes the command's
// own streams (c.App.Reader, Writer, ErrWriter) and ends with c.Context.
func commands() []*cli.Command {
	return []*cli.Command{
		{
			Name:      "pull",
			Usage:     "pull an image from a registry (registry/repo:tag or @digest; Docker Hub and library/ by default)",
			ArgsUsage: "REF",
			Flags:     pullFlags(),
			Action:    onImage(pull),
		},
		{
			Name:      "load",
			Usage:     "load images from a docker-archive (docker save) or OCI-layout tarball, under the names it gives them",
			ArgsUsage: "FILE",
			Flags: []cli.Flag{&cli.StringSliceFlag{
				Name:  "tag",
				Usage: "one more `NAME` for the image (repeatable; a name without a registry is under localhost/, as in podman)",
			}},
			Action: onImage(load),
		},
		{
			Name:      "push",
			Usage:     "put an image's root on a remote libvirt host ahead of its runs (pulled first if it is not in the store)",
			ArgsUsage: "-c URI REF",
			Flags:     append([]cli.Flag{remoteFlag()}, pullFlags()...),
			Action:    onImage(push),
		},
		{
			Name:   "list",
			Usage:  "list the images in the store, or with -c those a remote libvirt host holds",
			Flags:  []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "as JSON"}, remoteFlag()},
			Action: withStore(list),
		},
		{
			Name:      "inspect",
			Usage:     "show an image's record and config as JSON",
			ArgsUsage: "REF",
			Action:    onImage(inspect),
		},
		{
			Name:      "rm",
			Usage:     "remove an image's reference (prune frees its content)",
			ArgsUsage: "REF",
			Action:    onImage(func(_ *cli.Context, s *images.Store, ref string) error { return s.Remove(ref) }),
		},
		{
			Name:   "prune",
			Usage:  "free the content no image references, or with -c the uploads no sandbox of a remote libvirt host uses",
			Flags:  []cli.Flag{remoteFlag()},
			Action: withStore(prune),
		},
		{
			Name:      "run",
			Usage:     "run an image (pulled first if it is not in the store) in a sandbox",
			ArgsUsage: "[virt-sandbox options] REF [-- COMMAND [ARGS...]]",
			Flags:     append(append(options.Flags(), pullFlags()...), dockerRunFlags()...),
			Action:    runImage,
		},
	}
}

// withStore runs act with the store --store names.
func withStore(act func(c *cli.Context, s *images.Store) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		s, err := images.Open(c.String("store"))
		if err != nil {
			return err
		}
		defer s.Close()
		return act(c, s)
	}
}

// onImage is withStore for a subcommand whose one argument names an image
// or a file; without it, the store is not even opened.
func onImage(act func(c *cli.Context, s *images.Store, arg string) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		if c.NArg() < 1 {
			return fmt.Errorf("%w: no image given", config.ErrInvalid)
		}
		return withStore(func(c *cli.Context, s *images.Store) error { return act(c, s, c.Args().First()) })(c)
	}
}

func pull(c *cli.Context, s *images.Store, ref string) error {
	img, err := s.Pull(c.Context, ref, pullOptions(c))
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "%s %s\n", img.Ref, img.Digest)
	return nil
}

func pullOptions(c *cli.Context) images.PullOptions {
	return images.PullOptions{Platform: c.String("platform"), Insecure: c.Bool("insecure"), Progress: c.App.ErrWriter}
}

func load(c *cli.Context, s *images.Store, file string) error {
	imgs, err := s.Load(c.Context, file, c.StringSlice("tag")...)
	if err != nil {
		return err
	}
	for _, img := range imgs {
		fmt.Fprintf(c.App.Writer, "%s %s\n", img.Ref, img.Digest)
	}
	return nil
}

func list(c *cli.Context, s *images.Store) error {
	list, err := s.List()
	if err != nil {
		return err
	}
	if c.IsSet("connect") {
		if list, err = onHost(c.String("connect"), list); err != nil {
			return err
		}
	}
	if c.Bool("json") {
		if list == nil {
			list = []*images.Image{}
		}
		return writeJSON(c.App.Writer, list)
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REFERENCE\tDIGEST\tPLATFORM\tSIZE\tCREATED")
	for _, img := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", img.Ref, images.ShortDigest(img.Digest), img.Platform, images.HumanSize(img.Size), img.Created.Format(time.DateOnly))
	}
	return tw.Flush()
}

func inspect(c *cli.Context, s *images.Store, ref string) error {
	img, err := s.Get(ref)
	if err != nil {
		return err
	}
	return writeJSON(c.App.Writer, img)
}

func prune(c *cli.Context, s *images.Store) error {
	if c.IsSet("connect") {
		return pruneHost(c)
	}
	freed, err := s.Prune()
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "freed %s\n", images.HumanSize(freed))
	return nil
}

// pruneHost removes the uploads of the remote host no sandbox there
// uses, and names each.
func pruneHost(c *cli.Context) error {
	removed, freed, err := sandbox.PruneHost(c.String("connect"))
	for _, vol := range removed {
		fmt.Fprintf(c.App.Writer, "removed %s\n", vol)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "freed %s\n", images.HumanSize(int64(freed)))
	return nil
}

// runImage runs the image on a per-run writable layer over its flattened
// root, as the image's config says unless the command line says otherwise.
func runImage(c *cli.Context) error {
	args := c.Args().Slice()
	if len(args) == 0 {
		return fmt.Errorf("%w: no image given", config.ErrInvalid)
	}
	ref, argv := args[0], args[1:]
	if len(argv) > 0 && argv[0] == "--" {
		argv = argv[1:]
	}
	// Refused before anything is pulled.
	if c.String("root") != "" {
		return fmt.Errorf("%w: -r: the image is the root", config.ErrInvalid)
	}
	if c.String("user") != "" && c.String("switch-user") != "" {
		return fmt.Errorf("%w: -u %q and -S %q both name the user: give one", config.ErrInvalid, c.String("user"), c.String("switch-user"))
	}
	return withStore(func(c *cli.Context, s *images.Store) error {
		img, root, err := imageRoot(c, s, ref)
		if err != nil {
			return err
		}
		cfg, err := imageSandbox(c, s, img, root, argv)
		if err != nil {
			return err
		}
		signals, stopSignals := options.Signals()
		defer stopSignals()
		return options.Finished(sandbox.Run(cfg, sandbox.IO{Stdin: c.App.Reader, Stdout: c.App.Writer, Stderr: c.App.ErrWriter, Signals: signals}))
	})(c)
}

// imageRoot finds the image (pulling it when the store lacks it) and its
// flattened root.
func imageRoot(c *cli.Context, s *images.Store, ref string) (*images.Image, string, error) {
	img, err := s.Get(ref)
	if errors.Is(err, images.ErrNotFound) {
		img, err = s.Pull(c.Context, ref, pullOptions(c))
	}
	if err != nil {
		return nil, "", err
	}
	root, err := s.RootFS(img)
	if errors.Is(err, images.ErrDamaged) {
		// A blob was damaged on disk and is gone now: fetch exactly
		// this image again, by its digest, if its registry has it.
		if again, perr := refetch(c.Context, s, img, c.Bool("insecure")); perr == nil {
			img = again
			root, err = s.RootFS(img)
		}
	}
	return img, root, err
}

// imageSandbox is the sandbox that runs img on root: what the image's
// config says, unless the command line says otherwise.
func imageSandbox(c *cli.Context, s *images.Store, img *images.Image, root string, argv []string) (*config.Sandbox, error) {
	var entrypoint *string
	if c.IsSet("entrypoint") {
		e := c.String("entrypoint")
		entrypoint = &e
	}
	cmdline := imageCommand(img.Config, entrypoint, argv)
	if len(cmdline) == 0 {
		return nil, fmt.Errorf("%w: image %s has no entrypoint or command, and none was given", config.ErrInvalid, img.Ref)
	}
	cfg, err := options.ConfigOnRoot(c, cmdline, root)
	if err != nil {
		return nil, err
	}
	cfg.WritableRoot = true
	if config.Remote(cfg.URI) {
		// A remote host gets the root as one read-only filesystem
		// image, uploaded once per image.
		if cfg.RootImage, err = s.RootImage(img); err != nil {
			return nil, err
		}
		cfg.Root = ""
	}
	applyImageConfig(cfg, img.Config, c)
	// An image runs as root unless it says otherwise: in a user
	// namespace by default, as container runtimes run it.
	if cfg.Identity.UserNS, err = options.UserNS(c, cfg.Driver, true); err != nil {
		return nil, err
	}
	return cfg, cfg.Validate()
}

// remoteFlag names the remote host of push, list and prune.
func remoteFlag() cli.Flag {
	return &cli.StringFlag{Name: "connect", Aliases: []string{"c"}, Usage: "the remote host's libvirt `URI` (qemu+ssh://HOST/system, lxc+tcp://HOST/, ...)"}
}

// push puts the image's root on the remote host, as its runs there would,
// so that none of them waits for the upload.
func push(c *cli.Context, s *images.Store, ref string) error {
	if !c.IsSet("connect") {
		return fmt.Errorf("%w: push: -c URI names the host to push to", config.ErrInvalid)
	}
	uri := c.String("connect")
	if !config.Remote(uri) {
		return fmt.Errorf("%w: -c %s is this machine: its runs take images from the store, there is nothing to push", config.ErrInvalid, uri)
	}
	img, _, err := imageRoot(c, s, ref)
	if err != nil {
		return err
	}
	path, err := s.RootImage(img)
	if err != nil {
		return err
	}
	volume, uploaded, err := sandbox.PushRootImage(uri, path)
	if err != nil {
		return err
	}
	what := "already there"
	if uploaded {
		what = "pushed"
	}
	fmt.Fprintf(c.App.Writer, "%s %s %s: %s\n", img.Ref, img.Digest, volume, what)
	return nil
}

// onHost is the images of list that the remote host of uri holds.
func onHost(uri string, list []*images.Image) ([]*images.Image, error) {
	held, err := sandbox.HostImages(uri)
	if err != nil {
		return nil, err
	}
	var out []*images.Image
	for _, img := range list {
		hex := strings.TrimPrefix(img.Digest, "sha256:")
		if slices.ContainsFunc(held, func(p string) bool { return strings.HasPrefix(hex, p) }) {
			out = append(out, img)
		}
	}
	return out, nil
}

// dockerRunFlags are docker run's options for what the image's config
// says, with docker's meaning.
func dockerRunFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "entrypoint", Usage: "run `CMD` instead of the image's entrypoint; the image's command is then not used (\"\" clears the entrypoint)"},
		&cli.StringFlag{Name: "workdir", Aliases: []string{"w"}, Usage: "the program's working `DIR` instead of the image's"},
		&cli.StringFlag{Name: "user", Aliases: []string{"u"}, Usage: "run as `USER[:GROUP]` (a name of the image's /etc/passwd or a uid[:gid]) instead of the image's user"},
	}
}

// imageCommand is what runs, as docker run decides it: the entrypoint (the
// image's, or the one given, which also drops the image's command), then
// the command given, else the image's command.
func imageCommand(ic images.Config, entrypoint *string, argv []string) []string {
	ep, cmd := ic.Entrypoint, ic.Cmd
	if entrypoint != nil {
		ep, cmd = nil, nil
		if *entrypoint != "" {
			ep = []string{*entrypoint}
		}
	}
	if len(argv) > 0 {
		cmd = argv
	}
	return append(append([]string(nil), ep...), cmd...)
}

// refetch pulls img again by digest (repo@sha256:...), so that nothing but
// the same image can come back, and records it under its reference again.
func refetch(ctx context.Context, s *images.Store, img *images.Image, insecure bool) (*images.Image, error) {
	repo, _, _ := strings.Cut(img.Ref, "@")
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo = repo[:i]
	}
	had := map[string]bool{}
	if list, err := s.List(); err == nil {
		for _, i := range list {
			had[i.Ref] = true
		}
	}
	got, err := s.Pull(ctx, repo+"@"+img.Digest, images.PullOptions{Insecure: insecure, Platform: img.Platform})
	if err != nil {
		return nil, err
	}
	if !had[got.Ref] {
		// Pull recorded the digest reference; the user named another.
		s.Remove(got.Ref)
	}
	if got.Digest != img.Digest {
		return nil, fmt.Errorf("refetched %s as %s", img.Digest, got.Digest)
	}
	return s.Get(img.Ref)
}

// applyImageConfig sets the environment, working directory and user the
// image asks for; -e, -w, -u, -p and -S on the command line win.
func applyImageConfig(cfg *config.Sandbox, ic images.Config, c *cli.Context) {
	env := append([]string(nil), ic.Env...)
	for _, kv := range cfg.Command.Env {
		// The launcher's default PATH yields to the image's.
		if kv == "PATH="+options.DefaultPath && options.HasEnv(ic.Env, "PATH") {
			continue
		}
		env = options.SetEnv(env, kv)
	}
	cfg.Command.Env = env
	cfg.Command.Dir = ic.WorkingDir
	if w := c.String("workdir"); w != "" {
		cfg.Command.Dir = w
	}
	if cfg.Command.Dir == "" {
		cfg.Command.Dir = "/"
	}
	if u := c.String("user"); u != "" {
		cfg.Identity = imageUser(u)
		cfg.Identity.Privileged = c.Bool("privileged")
		return
	}
	if c.Bool("privileged") || c.String("switch-user") != "" {
		return
	}
	// As container runtimes do: the image's user, else root (without
	// capabilities here unless -p).
	cfg.Identity = config.Identity{User: "root", Home: "/root"}
	if ic.User != "" {
		cfg.Identity = imageUser(ic.User)
	}
}

// imageUser turns the image's USER (name, uid, uid:gid or name:group) into
// an identity; names are looked up in the image's own /etc/passwd.
func imageUser(u string) config.Identity {
	user, group, _ := strings.Cut(u, ":")
	var uid, gid int
	if _, err := fmt.Sscan(user, &uid); err != nil {
		return config.Identity{User: user, ByName: true}
	}
	gid = uid
	if group != "" {
		fmt.Sscan(group, &gid)
	}
	return config.Identity{UID: uid, GID: gid, User: user, Home: "/"}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
