package options

import (
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/virt-sandbox/virt-sandbox/config"
)

// configOf parses args as virt-sandbox's command line and returns what
// Config makes of them: a *cli.Context exists only inside an Action.
func configOf(t *testing.T, args ...string) (*config.Sandbox, error) {
	t.Helper()
	return configOfApp(t, &cli.App{}, args...)
}

func configOfApp(t *testing.T, app *cli.App, args ...string) (*config.Sandbox, error) {
	t.Helper()
	var cfg *config.Sandbox
	var cfgErr error
	ran := false
	app.Name = "virt-sandbox"
	app.Flags = Flags()
	app.Writer, app.ErrWriter = io.Discard, io.Discard
	app.OnUsageError = func(_ *cli.Context, err error, _ bool) error { return err }
	app.Action = func(c *cli.Context) error {
		ran = true
		cfg, cfgErr = Config(c, c.Args().Slice())
		return nil
	}
	if err := app.Run(append([]string{"virt-sandbox"}, args...)); err != nil {
		t.Fatalf("parsing %q: %v", args, err)
	}
	if !ran {
		t.Fatalf("parsing %q ran no action", args)
	}
	return cfg, cfgErr
}

func mustConfig(t *testing.T, args ...string) *config.Sandbox {
	t.Helper()
	cfg, err := configOf(t, args...)
	if err != nil {
		t.Fatalf("Config(%q) = %v", args, err)
	}
	return cfg
}

// clearDebugEnv keeps the caller's environment out of Debug.
func clearDebugEnv(t *testing.T) {
	t.Setenv("LIBVIRT_SANDBOX_INIT_DEBUG", "")
}

func TestConfigDriver(t *testing.T) {
	clearDebugEnv(t)
	for _, tt := range []struct {
		args    []string
		wantURI string
		want    config.Driver
	}{
		{args: []string{"true"}, wantURI: "lxc:///", want: config.LXC},
		{args: []string{"-c", "lxc:///", "true"}, wantURI: "lxc:///", want: config.LXC},
		{args: []string{"-c", "qemu:///system", "true"}, wantURI: "qemu:///system", want: config.QEMU},
		{args: []string{"--connect", "qemu+ssh://h/system", "true"}, wantURI: "qemu+ssh://h/system", want: config.QEMU},
		{args: []string{"-c", "qemu:///embed?root=/tmp/x", "true"}, wantURI: "qemu:///embed?root=/tmp/x", want: config.QEMU},
	} {
		cfg := mustConfig(t, tt.args...)
		if cfg.Driver != tt.want || cfg.URI != tt.wantURI {
			t.Errorf("Config(%q) = driver %q, uri %q, want %q, %q", tt.args, cfg.Driver, cfg.URI, tt.want, tt.wantURI)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	clearDebugEnv(t)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{args: []string{"-c", "xen:///", "true"}, want: "xen"},
		{args: []string{"-c", "nonsense", "true"}, want: "nonsense"},
		{args: nil, want: "no command"},
		{args: []string{"--memory", "bad", "true"}, want: "--memory"},
		{args: []string{"-e", "1BAD=x", "true"}, want: "1BAD"},
		{args: []string{"-e", "NOVALUE", "true"}, want: "NOVALUE"},
		{args: []string{"-n", "bad/name", "true"}, want: "bad/name"},
		{args: []string{"--virt-type", "xen", "-c", "qemu:///session", "true"}, want: "xen"},
		// QEMU cannot boot in 1 MiB; the message names the option as typed.
		{args: []string{"--memory", "1M", "-c", "qemu:///session", "true"}, want: `--memory "1M": too small`},
		{args: []string{"--memory", "300K", "-c", "qemu:///session", "true"}, want: `--memory "300K": too small`},
		{args: []string{"--memory", "0", "true"}, want: `--memory "0"`},
		{args: []string{"--vcpus", "0", "true"}, want: "--vcpus 0"},
		{args: []string{"--virt-type", "xen", "true"}, want: `--virt-type "xen"`},
		// Errors name the options as typed, never the config's fields.
		{args: []string{"-n", "a/b", "true"}, want: `-n "a/b": want`},
		{args: []string{"-m", "ram:/x=1M", "-m", "ram:/x/=2M", "true"}, want: `-m "ram:/x/=2M": target /x already used by -m "ram:/x=1M"`},
		{args: []string{"-m", "ram:/srv=1M", "--rw", "/srv", "true"}, want: `--rw "/srv": target /srv already used by -m "ram:/srv=1M"`},
		{args: []string{"--disk", "file:a=/x", "--disk", "file:a=/y", "true"}, want: `--disk "file:a=/y": tag a already used by --disk "file:a=/x"`},
	} {
		cfg, err := configOf(t, tt.args...)
		if !errors.Is(err, config.ErrInvalid) || !strings.Contains(fmt.Sprint(err), tt.want) {
			t.Errorf("Config(%q) = %+v, %v, want an error wrapping config.ErrInvalid naming %q", tt.args, cfg, err, tt.want)
		}
	}
}

func TestConfigName(t *testing.T) {
	clearDebugEnv(t)
	uuidRE := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	nameRE := regexp.MustCompile(`^sandbox-[0-9a-f]{8}$`)
	seen := map[string]bool{}
	for range 20 {
		cfg := mustConfig(t, "true")
		if !nameRE.MatchString(cfg.Name) || cfg.Name != "sandbox-"+cfg.UUID[:8] {
			t.Errorf("Config(true).Name = %q, want sandbox- and the first 8 hex digits of the UUID %s", cfg.Name, cfg.UUID)
		}
		if !uuidRE.MatchString(cfg.UUID) {
			t.Errorf("Config(true).UUID = %q, want a random (version 4) UUID", cfg.UUID)
		}
		// Two sandboxes of one user run side by side: their default
		// names must differ.
		if seen[cfg.Name] {
			t.Errorf("Config(true).Name = %q twice in 20 calls, want a new name each time", cfg.Name)
		}
		seen[cfg.Name] = true
	}
	for _, args := range [][]string{{"-n", "mine", "true"}, {"--name", "mine", "true"}} {
		if cfg := mustConfig(t, args...); cfg.Name != "mine" || !uuidRE.MatchString(cfg.UUID) {
			t.Errorf("Config(%q) = name %q, uuid %q, want mine and a UUID", args, cfg.Name, cfg.UUID)
		}
	}
}

func TestConfigCommand(t *testing.T) {
	clearDebugEnv(t)
	args := []string{"-c", "qemu:///session", "/bin/sh", "-c", "echo hi"}
	cfg := mustConfig(t, args...)
	// Options after the command are the command's own.
	if want := []string{"/bin/sh", "-c", "echo hi"}; !slices.Equal(cfg.Command.Argv, want) {
		t.Errorf("Config(%q).Command.Argv = %q, want %q", args, cfg.Command.Argv, want)
	}
	if cfg.Version != config.Version {
		t.Errorf("Config(%q).Version = %d, want %d", args, cfg.Version, config.Version)
	}
}

func TestConfigEnv(t *testing.T) {
	clearDebugEnv(t)
	for _, tt := range []struct {
		args []string
		want []string
	}{
		// The caller's PATH may not exist in the sandbox.
		{args: []string{"-T", "true"}, want: []string{"PATH=" + DefaultPath}},
		{args: []string{"-T", "-e", "FOO=bar=baz", "true"}, want: []string{"PATH=" + DefaultPath, "FOO=bar=baz"}},
		{args: []string{"-T", "-e", "PATH=/opt/bin", "true"}, want: []string{"PATH=/opt/bin"}},
		{args: []string{"-T", "-e", "A=1", "-e", "PATH=/x", "-e", "B=", "true"}, want: []string{"PATH=/x", "A=1", "B="}},
		// The last of one key wins, in the place of the first.
		{args: []string{"-T", "-e", "A=1", "-e", "B=2", "-e", "A=3", "true"}, want: []string{"PATH=" + DefaultPath, "A=3", "B=2"}},
		// PATHX is not PATH.
		{args: []string{"-T", "-e", "PATHX=1", "true"}, want: []string{"PATH=" + DefaultPath, "PATHX=1"}},
	} {
		cfg := mustConfig(t, tt.args...)
		if !slices.Equal(cfg.Command.Env, tt.want) {
			t.Errorf("Config(%q).Command.Env = %q, want %q", tt.args, cfg.Command.Env, tt.want)
		}
	}
}

// TestConfigEnvComma checks a value with a comma survives when the App sets
// DisableSliceFlagSeparator: urfave/cli otherwise splits slice flags on
// commas, so -e LIST=a,B=c would set LIST=a and B=c.
func TestConfigEnvComma(t *testing.T) {
	clearDebugEnv(t)
	args := []string{"-T", "-e", "LIST=a,B=c", "true"}
	cfg, err := configOfApp(t, &cli.App{DisableSliceFlagSeparator: true}, args...)
	if want := []string{"PATH=" + DefaultPath, "LIST=a,B=c"}; err != nil || !slices.Equal(cfg.Command.Env, want) {
		t.Errorf("Config(%q) with DisableSliceFlagSeparator = %v, want Env %q", args, err, want)
	}
}

func TestConfigTTY(t *testing.T) {
	clearDebugEnv(t)
	t.Setenv("TERM", "xterm-test")
	for _, tt := range []struct {
		args     []string
		want     bool
		wantTERM bool
	}{
		{args: []string{"-T", "true"}, want: false},
		{args: []string{"--no-tty", "true"}, want: false},
		// Asked for, even though the test's stdin is no terminal; the
		// program's terminal is the caller's kind.
		{args: []string{"-t", "true"}, want: true, wantTERM: true},
		{args: []string{"--tty", "true"}, want: true, wantTERM: true},
	} {
		cfg := mustConfig(t, tt.args...)
		if cfg.TTY != tt.want {
			t.Errorf("Config(%q).TTY = %v, want %v", tt.args, cfg.TTY, tt.want)
		}
		if got := slices.Contains(cfg.Command.Env, "TERM=xterm-test"); got != tt.wantTERM {
			t.Errorf("Config(%q).Command.Env = %q, want TERM=xterm-test: %v", tt.args, cfg.Command.Env, tt.wantTERM)
		}
	}
}

func TestConfigDebug(t *testing.T) {
	for _, tt := range []struct {
		args []string
		env  string
		want bool
	}{
		{args: []string{"true"}, want: false},
		{args: []string{"-d", "true"}, want: true},
		{args: []string{"-v", "true"}, want: true},
		{args: []string{"--verbose", "true"}, want: true},
		// The original's variable still turns it on.
		{args: []string{"true"}, env: "1", want: true},
		{args: []string{"true"}, env: "0", want: false},
	} {
		t.Setenv("LIBVIRT_SANDBOX_INIT_DEBUG", tt.env)
		if cfg := mustConfig(t, tt.args...); cfg.Debug != tt.want {
			t.Errorf("Config(%q) with LIBVIRT_SANDBOX_INIT_DEBUG=%q: Debug = %v, want %v", tt.args, tt.env, cfg.Debug, tt.want)
		}
	}
}

func TestConfigIdentity(t *testing.T) {
	clearDebugEnv(t)
	for _, tt := range []struct {
		args []string
		want config.Identity
	}{
		{args: []string{"-p", "true"}, want: config.Identity{UID: 0, GID: 0, User: "root", Home: "/root", Privileged: true}},
		{args: []string{"--privileged", "true"}, want: config.Identity{UID: 0, GID: 0, User: "root", Home: "/root", Privileged: true}},
		// The sandbox's /etc/passwd says who nobody is, not the host's.
		{args: []string{"-S", "nobody", "true"}, want: config.Identity{User: "nobody", ByName: true}},
		{args: []string{"-S", "nobody", "-p", "true"}, want: config.Identity{User: "nobody", ByName: true, Privileged: true}},
	} {
		cfg := mustConfig(t, tt.args...)
		if got := cfg.Identity; !identityEqual(got, tt.want) {
			t.Errorf("Config(%q).Identity = %+v, want %+v", tt.args, got, tt.want)
		}
	}

	// By default the caller runs as themselves.
	cfg := mustConfig(t, "true")
	id := cfg.Identity
	if id.UID != os.Getuid() || id.GID != os.Getgid() || id.Privileged || id.ByName {
		t.Errorf("Config(true).Identity = %+v, want uid %d, gid %d, unprivileged", id, os.Getuid(), os.Getgid())
	}
	if groups, err := os.Getgroups(); err == nil && !slices.Equal(id.Groups, groups) {
		t.Errorf("Config(true).Identity.Groups = %v, want %v", id.Groups, groups)
	}
}

func TestConfigUserNS(t *testing.T) {
	clearDebugEnv(t)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{args: []string{"true"}, want: ""},
		{args: []string{"-p", "true"}, want: config.UserNSOn},
		{args: []string{"-p", "--userns", "off", "true"}, want: config.UserNSOff},
		{args: []string{"--userns", "on", "true"}, want: config.UserNSOn},
		// A QEMU sandbox's boundary is its kernel.
		{args: []string{"-c", "qemu:///system", "-p", "true"}, want: ""},
		// Its ranges of ids are this host's.
		{args: []string{"-c", "lxc+ssh://elsewhere/", "-p", "true"}, want: ""},
		{args: []string{"-c", "qemu:///system", "--userns", "off", "true"}, want: config.UserNSOff},
	} {
		if got := mustConfig(t, tt.args...).Identity.UserNS; got != tt.want {
			t.Errorf("Config(%q).Identity.UserNS = %q, want %q", tt.args, got, tt.want)
		}
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{args: []string{"--userns", "yes", "true"}, want: `--userns "yes": want on or off`},
		{args: []string{"-c", "qemu:///system", "--userns", "on", "true"}, want: "--userns on: user namespaces are for LXC sandboxes"},
	} {
		_, err := configOf(t, tt.args...)
		if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Config(%q) = %v, want an error with %q", tt.args, err, tt.want)
		}
	}
}

func identityEqual(a, b config.Identity) bool {
	return a.UID == b.UID && a.GID == b.GID && slices.Equal(a.Groups, b.Groups) && a.User == b.User &&
		a.Home == b.Home && a.Privileged == b.Privileged && a.ByName == b.ByName
}

func TestConfigKernel(t *testing.T) {
	clearDebugEnv(t)
	for _, tt := range []struct {
		args []string
		want config.Kernel
	}{
		{args: []string{"true"}, want: config.Kernel{}},
		{args: []string{"--memory", "2G", "true"}, want: config.Kernel{MemoryMiB: 2048}},
		{args: []string{"--memory", "512M", "true"}, want: config.Kernel{MemoryMiB: 512}},
		// A bare number is MiB, as for qemu -m; other sizes round up to
		// whole MiB: never less than asked.
		{args: []string{"--memory", "300", "-c", "qemu:///system", "true"}, want: config.Kernel{MemoryMiB: 300}},
		{args: []string{"--memory", "1536K", "true"}, want: config.Kernel{MemoryMiB: 2}},
		{
			args: []string{"-c", "qemu:///session", "--memory", "1G", "--vcpus", "4", "--kernpath", "/boot/k", "--kernver", "6.1.0", "--kmodpath", "/m", "--virt-type", "qemu", "--kernel-args", "a=1 b", "true"},
			want: config.Kernel{Path: "/boot/k", Version: "6.1.0", ModulesDir: "/m", MemoryMiB: 1024, VCPUs: 4, VirtType: "qemu", Cmdline: "a=1 b"},
		},
	} {
		if cfg := mustConfig(t, tt.args...); cfg.Kernel != tt.want {
			t.Errorf("Config(%q).Kernel = %+v, want %+v", tt.args, cfg.Kernel, tt.want)
		}
	}
}

func TestConfigDir(t *testing.T) {
	clearDebugEnv(t)
	t.Chdir(t.TempDir())
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	// On the host's root the caller's directory is there too.
	if cfg := mustConfig(t, "true"); cfg.Root != "" || cfg.Command.Dir != wd {
		t.Errorf("Config(true) = root %q, dir %q, want the host's root and %q", cfg.Root, cfg.Command.Dir, wd)
	}
}

func TestDriverOf(t *testing.T) {
	for _, tt := range []struct {
		uri     string
		want    config.Driver
		wantErr bool
	}{
		{uri: "lxc:///", want: config.LXC},
		{uri: "lxc:///system", want: config.LXC},
		{uri: "lxc+ssh://host/", want: config.LXC},
		{uri: "qemu:///system", want: config.QEMU},
		{uri: "qemu:///session", want: config.QEMU},
		{uri: "qemu+ssh://user@host/system", want: config.QEMU},
		{uri: "qemu+unix:///system?socket=/run/x", want: config.QEMU},
		{uri: "qemu:///embed?root=/tmp/x", want: config.QEMU},
		{uri: "xen:///", wantErr: true},
		{uri: "test:///default", wantErr: true},
		{uri: "qemu", wantErr: true},
		{uri: "", wantErr: true},
		{uri: "+qemu:///system", wantErr: true},
	} {
		got, err := DriverOf(tt.uri)
		if tt.wantErr {
			if !errors.Is(err, config.ErrInvalid) || got != "" {
				t.Errorf("DriverOf(%q) = %q, %v, want an error wrapping config.ErrInvalid", tt.uri, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("DriverOf(%q) = %q, %v, want %q", tt.uri, got, err, tt.want)
		}
	}
}
