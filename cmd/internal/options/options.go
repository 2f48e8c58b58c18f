// Package options holds the virt-sandbox command-line options and their
// translation into a config.Sandbox, shared by every command that launches
// sandboxes.
package options

import (
	"crypto/rand"
	"fmt"
	"os"
	"os/user"
	"path"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/virt-sandbox/virt-sandbox/config"
	"github.com/virt-sandbox/virt-sandbox/config/guest"
)

// DefaultPath is the program's PATH unless -e sets one: the caller's own
// PATH may name directories the sandbox's root does not have.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Flags are the options that describe a sandbox.
func Flags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "connect", Aliases: []string{"c"}, Value: "lxc:///", Usage: "libvirt `URI`: lxc:///, qemu:///system, qemu:///session, qemu:///embed?root=DIR, or a remote host's (qemu+ssh://HOST/system, lxc+tcp://HOST/, ...)"},
		&cli.StringFlag{Name: "name", Aliases: []string{"n"}, Usage: "domain `NAME` (default: a unique sandbox-XXXXXXXX)"},
		&cli.StringSliceFlag{Name: "env", Aliases: []string{"e"}, Usage: "set `KEY=VALUE` in the program's environment (repeatable)"},
		&cli.BoolFlag{Name: "privileged", Aliases: []string{"p"}, Usage: "run the program as root with its capabilities, on LXC those of a user namespace's root (see --userns) (default: the caller's uid and gid, no capabilities)"},
		&cli.StringFlag{Name: "switch-user", Aliases: []string{"S"}, Usage: "run the program as `USER` of the sandbox's /etc/passwd"},
		&cli.StringFlag{Name: "userns", Usage: "`on` or off: run the program in a user namespace whose root is an unprivileged id of the host (LXC; default on with -p and for images, off otherwise)"},
		&cli.BoolFlag{Name: "tty", Aliases: []string{"t"}, Usage: "run the program on a terminal (default: when stdin and stdout are terminals)"},
		&cli.BoolFlag{Name: "no-tty", Aliases: []string{"T"}, Usage: "run the program on pipes even from a terminal"},
		&cli.StringFlag{Name: "security", Aliases: []string{"s"}, Usage: "security label: `dynamic` (the default), static,label=LABEL, or inherit (the caller's)"},
		&cli.BoolFlag{Name: "debug", Aliases: []string{"d", "v", "verbose"}, Usage: "show the launcher's and the init's steps, the sandbox's log console and libvirt's errors on stderr"},
		&cli.StringFlag{Name: "root", Aliases: []string{"r"}, Usage: "host `DIR` to use as the sandbox's / (read-only; default the host's /)", Category: "Files"},
		&cli.BoolFlag{Name: "writable-root", Aliases: []string{"W"}, Usage: "put a throw-away tmpfs overlay over the root: writes anywhere work and never reach the host or DIR", Category: "Files"},
		&cli.StringSliceFlag{Name: "mount", Aliases: []string{"m"}, Usage: "`TYPE:DST=SRC[,ro]`: host-bind:DST=DIR (empty DIR: a fresh temporary one), host-image:DST=FILE[,format=raw|qcow2], guest-bind:DST=PATH, ram:DST=SIZE (repeatable)", Category: "Files"},
		&cli.StringSliceFlag{Name: "include", Aliases: []string{"i"}, Usage: "copy a host file or directory into a writable mount: `GUEST=HOST`, or PATH for the same path (repeatable)", Category: "Files"},
		&cli.StringSliceFlag{Name: "includefile", Aliases: []string{"I"}, Usage: "copy the files listed in `FILE`, one -i spec per line (repeatable)", Category: "Files"},
		&cli.StringSliceFlag{Name: "disk", Usage: "`file:TAG=FILE[,format=raw|qcow2]`: a block device at /dev/disk/by-tag/TAG (repeatable)", Category: "Files"},
		&cli.StringSliceFlag{Name: "rw", Usage: "make host `PATH` writable inside, at the same path (repeatable)", Category: "Files"},
		&cli.StringSliceFlag{Name: "pass-env", Usage: "pass the caller's environment variables named `NAME` through; NAME may be a glob such as 'GO*' (repeatable)"},
		&cli.GenericFlag{Name: "timeout", Value: new(duration), Usage: "destroy the sandbox after `DURATION` (seconds, or 90s, 10m) and exit 124"},
		&cli.GenericFlag{Name: "start-timeout", Value: new(duration), Usage: "give up when the sandbox has not started within `DURATION` (default 30s for LXC, 3m for QEMU), exit 125"},
		&cli.StringSliceFlag{Name: "network", Aliases: []string{"N"}, Usage: "an interface: `dhcp[,source=NET][,mac=MAC]`, address=IP/PREFIX[%BCAST],route=NET/PREFIX%GW[,source=NET][,mac=MAC], filter=NAME[,filter.KEY=VALUE], or user[,mac=MAC] for QEMU's user-mode network, which qemu:///session can have (repeatable; NET is a libvirt network, default 'default'; without -N only loopback)", Category: "Network"},
		&cli.StringFlag{Name: "memory", Usage: "memory `SIZE` (e.g. 512M, 2G; a bare number is MiB; QEMU default 512M, LXC default no limit)", Category: "Machine"},
		&cli.UintFlag{Name: "vcpus", Usage: "number of virtual CPUs (QEMU; default 1)", Category: "Machine"},
		&cli.StringFlag{Name: "kernpath", Usage: "kernel image `PATH` (QEMU; default /boot/vmlinuz-VERSION)", Category: "Machine"},
		&cli.StringFlag{Name: "kernver", Usage: "kernel `VERSION` (QEMU; default the running kernel's, else the newest in /boot)", Category: "Machine"},
		&cli.StringFlag{Name: "kmodpath", Usage: "kernel modules `DIR`, holding VERSION/modules.dep or modules.dep (QEMU; default /lib/modules)", Category: "Machine"},
		&cli.StringFlag{Name: "virt-type", Usage: "`kvm` or qemu (TCG) (QEMU; default kvm when it works, checked within a second)", Category: "Machine"},
		&cli.StringFlag{Name: "share-fs", Usage: "how host directories reach the machine: `FS` is 9p (the default) or virtiofs (QEMU; virtiofs only on qemu:///system or qemu:///embed, as root, and never from a template)", Category: "Machine"},
		&cli.StringFlag{Name: "kernel-args", Usage: "`ARGS` appended to the kernel command line (QEMU)", Category: "Machine"},
		&cli.BoolFlag{Name: "cold-boot", Usage: "boot the kernel instead of restoring a machine booted once and saved, as a QEMU sandbox without disks or networks otherwise does", Category: "Machine"},
	}
}

// Config builds the sandbox config from the parsed options and the command
// line (the program and its arguments).
func Config(c *cli.Context, argv []string) (*config.Sandbox, error) {
	return ConfigOnRoot(c, argv, c.String("root"))
}

// connectURI is -c as given to the command, else as given before its
// subcommand (virt-sandbox-service -c URI create ...), else the default.
func connectURI(c *cli.Context) string {
	if c.IsSet("connect") {
		return c.String("connect")
	}
	for _, parent := range c.Lineage()[1:] {
		if parent.IsSet("connect") {
			return parent.String("connect")
		}
	}
	return c.String("connect")
}

// usage is the usage line of the command c runs.
func usage(c *cli.Context) string {
	switch {
	case c.Command != nil && c.Command.ArgsUsage != "":
		return c.App.Name + " " + c.Command.Name + " " + c.Command.ArgsUsage
	case c.App.UsageText != "":
		return c.App.UsageText
	}
	return c.App.Name + " [OPTIONS] [--] COMMAND [ARGS...]"
}

// ConfigOnRoot is Config for a root the command chose (an image's) instead
// of -r: what depends on the root (the working directory, the caller's
// directories shared at their paths) must know it from the start.
func ConfigOnRoot(c *cli.Context, argv []string, root string) (*config.Sandbox, error) {
	switch {
	case len(argv) == 0:
		return nil, fmt.Errorf("%w: no command given; usage: %s (--help for more)", config.ErrInvalid, usage(c))
	case argv[0] == "":
		return nil, fmt.Errorf(`%w: COMMAND "": an empty program name`, config.ErrInvalid)
	}
	uri := connectURI(c)
	drv, err := DriverOf(uri)
	if err != nil {
		return nil, err
	}
	s := &config.Sandbox{
		Version:      config.Version,
		Name:         c.String("name"),
		UUID:         newUUID(),
		Driver:       drv,
		URI:          uri,
		Command:      config.Command{Argv: argv},
		Debug:        c.Bool("debug") || os.Getenv(guest.DebugEnv) == "1",
		Timeout:      durationOf(c.Generic("timeout")),
		StartTimeout: durationOf(c.Generic("start-timeout")),
		Root:         root,
	}
	if s.Name == "" {
		s.Name = "sandbox-" + s.UUID[:8]
	} else if err := config.CheckName(s.Name); err != nil {
		return nil, fmt.Errorf("%w: -n %q: %v", config.ErrInvalid, s.Name, err)
	}
	s.TTY = WantTTY(c)
	if spec := c.String("security"); spec != "" {
		if s.Security, err = config.ParseSecurity(spec); err != nil {
			return nil, err
		}
	}
	if s.Command.Env, err = environment(c, s.TTY); err != nil {
		return nil, err
	}
	if err := files(c, s); err != nil {
		return nil, err
	}
	if s.Command.Dir == "" {
		s.Command.Dir = "/"
	}
	for _, spec := range c.StringSlice("network") {
		n, err := config.ParseNetwork(spec)
		if err != nil {
			return nil, err
		}
		if n.User && drv != config.QEMU {
			return nil, fmt.Errorf("%w: -N %q: %s", config.ErrInvalid, spec, config.UserNetworkIsQEMUs)
		}
		s.Networks = append(s.Networks, n)
	}
	if s.Kernel, err = kernel(c, drv); err != nil {
		return nil, err
	}
	s.Identity, err = identity(c)
	if err != nil {
		return nil, err
	}
	if s.Identity.UserNS, err = UserNS(c, drv, s.Identity.Privileged); err != nil {
		return nil, err
	}
	return s, s.Validate()
}

// WantTTY tells whether the program runs on a terminal: -t, or the
// command's own stdin and stdout are terminals and -T is not given.
func WantTTY(c *cli.Context) bool {
	if c.Bool("tty") {
		return true
	}
	return !c.Bool("no-tty") && isTerminal(c.App.Reader) && isTerminal(c.App.Writer)
}

func isTerminal(stream any) bool {
	f, ok := stream.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(f.Fd()))
}

// UserNS is --userns for a sandbox of driver drv, else "on" where
// defaultOn says so on this host's LXC: a program given root (-p, an
// image's user) then has the root of a user namespace only. The ranges of
// ids are this host's, so another host's sandbox has none by default.
func UserNS(c *cli.Context, drv config.Driver, defaultOn bool) (string, error) {
	v := c.String("userns")
	switch {
	case !c.IsSet("userns"):
		if defaultOn && drv == config.LXC && !config.Remote(connectURI(c)) {
			return config.UserNSOn, nil
		}
		return "", nil
	case v == config.UserNSOff:
		return v, nil
	case v != config.UserNSOn:
		return "", fmt.Errorf("%w: --userns %q: want on or off", config.ErrInvalid, v)
	case drv != config.LXC:
		return "", fmt.Errorf("%w: --userns on: user namespaces are for LXC sandboxes; a QEMU sandbox's boundary is its own kernel", config.ErrInvalid)
	}
	return v, nil
}

// environment is the program's: the default PATH, TERM on a terminal,
// then --pass-env, then -e.
func environment(c *cli.Context, tty bool) ([]string, error) {
	env := []string{"PATH=" + DefaultPath}
	if t := os.Getenv("TERM"); tty && t != "" {
		env = append(env, "TERM="+t)
	}
	for _, pattern := range c.StringSlice("pass-env") {
		passed, err := passEnv(pattern, os.Environ())
		if err != nil {
			return nil, err
		}
		for _, kv := range passed {
			env = SetEnv(env, kv)
		}
	}
	for _, e := range c.StringSlice("env") {
		kv, err := config.ParseEnv(e)
		if err != nil {
			return nil, err
		}
		env = SetEnv(env, kv)
	}
	return env, nil
}

// DriverOf names the driver of a libvirt URI such as qemu+ssh://host/system.
func DriverOf(uri string) (config.Driver, error) {
	scheme, _, ok := strings.Cut(uri, ":")
	if !ok {
		return "", fmt.Errorf("%w: -c %q: not a libvirt URI", config.ErrInvalid, uri)
	}
	scheme, _, _ = strings.Cut(scheme, "+")
	switch scheme {
	case "lxc":
		return config.LXC, nil
	case "qemu":
		return config.QEMU, nil
	}
	return "", fmt.Errorf("%w: -c %q: unsupported driver %q (want lxc or qemu)", config.ErrInvalid, uri, scheme)
}

// files fills in, for the sandbox's root, its working directory, mounts,
// includes and disks.
func files(c *cli.Context, s *config.Sandbox) error {
	s.WritableRoot = c.Bool("writable-root")
	if s.Root == "" && !config.Remote(s.URI) {
		// The host's root: the caller's directory exists there too. A
		// remote host's root has other directories: the program
		// starts in its /.
		if wd, err := os.Getwd(); err == nil {
			s.Command.Dir = wd
		}
	}
	if err := mounts(c, s); err != nil {
		return err
	}
	s.Mounts = append(s.Mounts, callerMounts(s)...)
	if err := includes(c, s); err != nil {
		return err
	}
	return disks(c, s)
}

// mounts reads -m and --rw; a target given twice is refused here, where
// both options are known as typed.
func mounts(c *cli.Context, s *config.Sandbox) error {
	used := map[string]string{} // target: the option that took it
	add := func(m config.Mount, opt string) error {
		if prev, dup := used[m.Target]; dup {
			return fmt.Errorf("%w: %s: target %s already used by %s", config.ErrInvalid, opt, m.Target, prev)
		}
		used[m.Target] = opt
		s.Mounts = append(s.Mounts, m)
		return nil
	}
	for _, spec := range c.StringSlice("mount") {
		m, err := config.ParseMount(spec)
		if err != nil {
			return err
		}
		if err := add(m, fmt.Sprintf("-m %q", spec)); err != nil {
			return err
		}
	}
	for _, p := range c.StringSlice("rw") {
		abs, err := filepath.Abs(p)
		if err != nil {
			return err
		}
		if err := add(config.Mount{Type: config.HostBind, Target: abs, Source: abs}, fmt.Sprintf("--rw %q", p)); err != nil {
			return err
		}
	}
	return nil
}

// disks reads --disk; a tag given twice is refused here, where both options
// are known as typed.
func disks(c *cli.Context, s *config.Sandbox) error {
	used := map[string]string{} // tag: the option that took it
	for _, spec := range c.StringSlice("disk") {
		d, err := config.ParseDisk(spec)
		if err != nil {
			return err
		}
		if prev, dup := used[d.Tag]; dup {
			return fmt.Errorf("%w: --disk %q: tag %s already used by --disk %q", config.ErrInvalid, spec, d.Tag, prev)
		}
		used[d.Tag] = spec
		s.Disks = append(s.Disks, d)
	}
	return nil
}

// includes reads -i and -I, and checks that each lands somewhere writable
// while the option as typed is known.
func includes(c *cli.Context, s *config.Sandbox) error {
	type spec struct{ opt, text string }
	var specs []spec
	for _, text := range c.StringSlice("include") {
		specs = append(specs, spec{"-i", text})
	}
	for _, file := range c.StringSlice("includefile") {
		b, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("%w: -I %q: %v", config.ErrInvalid, file, err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
				specs = append(specs, spec{"-I " + file + ":", line})
			}
		}
	}
	for _, sp := range specs {
		inc, err := config.ParseInclude(sp.text)
		if err != nil {
			return err
		}
		if !s.Writable(inc.Guest) {
			return fmt.Errorf("%w: %s %q: %s is %s", config.ErrInvalid, sp.opt, sp.text, inc.Guest, config.NotWritable)
		}
		s.Includes = append(s.Includes, inc)
	}
	return nil
}

// kernel reads the machine options. Their rules are checked here, where
// the messages can name the options as typed, before Validate's backstop.
func kernel(c *cli.Context, drv config.Driver) (config.Kernel, error) {
	k := config.Kernel{
		Path:       c.String("kernpath"),
		Version:    c.String("kernver"),
		ModulesDir: c.String("kmodpath"),
		VCPUs:      c.Uint("vcpus"),
		VirtType:   c.String("virt-type"),
		Cmdline:    c.String("kernel-args"),
		ShareFS:    c.String("share-fs"),
		ColdBoot:   c.Bool("cold-boot"),
	}
	if c.IsSet("vcpus") && k.VCPUs == 0 {
		return k, fmt.Errorf("%w: --vcpus 0: want at least 1", config.ErrInvalid)
	}
	switch k.VirtType {
	case "", "kvm", "qemu":
	default:
		return k, fmt.Errorf("%w: --virt-type %q: unknown (want kvm or qemu)", config.ErrInvalid, k.VirtType)
	}
	switch k.ShareFS {
	case "", guest.NinePShares, guest.VirtiofsShares:
	default:
		return k, fmt.Errorf("%w: --share-fs %q: unknown (want 9p or virtiofs)", config.ErrInvalid, k.ShareFS)
	}
	m := c.String("memory")
	if m == "" {
		return k, nil
	}
	mib, err := config.ParseMemory(m)
	if err != nil {
		return k, err
	}
	if drv == config.QEMU && mib < config.MinQEMUMemoryMiB {
		return k, fmt.Errorf("%w: --memory %q: too small for a QEMU guest (want at least %dM)", config.ErrInvalid, m, config.MinQEMUMemoryMiB)
	}
	k.MemoryMiB = mib
	return k, nil
}

func identity(c *cli.Context) (config.Identity, error) {
	switch {
	case c.String("switch-user") != "":
		return config.Identity{User: c.String("switch-user"), ByName: true, Privileged: c.Bool("privileged")}, nil
	case c.Bool("privileged"):
		return config.Identity{UID: 0, GID: 0, User: "root", Home: "/root", Privileged: true}, nil
	}
	id := config.Identity{UID: os.Getuid(), GID: os.Getgid()}
	if groups, err := os.Getgroups(); err == nil {
		id.Groups = groups
	}
	if u, err := user.LookupId(fmt.Sprint(id.UID)); err == nil {
		id.User, id.Home = u.Username, u.HomeDir
	}
	return id, nil
}

// passEnv returns the entries of environ whose names match pattern.
func passEnv(pattern string, environ []string) ([]string, error) {
	if _, err := path.Match(pattern, ""); err != nil {
		return nil, fmt.Errorf("%w: --pass-env %q: %v", config.ErrInvalid, pattern, err)
	}
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if ok, _ := path.Match(pattern, name); ok {
			out = append(out, kv)
		}
	}
	return out, nil
}

// HasEnv tells whether env sets key.
func HasEnv(env []string, key string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, key+"=") {
			return true
		}
	}
	return false
}

// SetEnv sets kv in env, replacing an entry of the same key.
func SetEnv(env []string, kv string) []string {
	key, _, _ := strings.Cut(kv, "=")
	for i, e := range env {
		if strings.HasPrefix(e, key+"=") {
			env[i] = kv
			return env
		}
	}
	return append(env, kv)
}

func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
