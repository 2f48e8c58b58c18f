package sandbox

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"libvirt.org/go/libvirt"

	"github.com/virt-sandbox/virt-sandbox/config"
	"github.com/virt-sandbox/virt-sandbox/config/guest"
	"github.com/virt-sandbox/virt-sandbox/sandbox/console"
	"github.com/virt-sandbox/virt-sandbox/sandbox/hostdirs"
)

// A service is a sandbox that is kept: exactly its saved config (nothing is
// guessed about the host), a persistent domain built from it, and a log
// directory. The config in its directory is the config share of its domain.
// Each command (create, start, stop, execute, ...) opens it, takes its
// steps and closes it.
type service struct{ *run }

// errNoService is wrapped when a named service does not exist.
var errNoService = errors.New("no such service")

// servicesDir holds one directory per service.
func servicesDir() string { return hostdirs.Services() }

// LogDir is where a service's program output is kept.
func LogDir(name string) string { return filepath.Join(hostdirs.Logs(), name) }

// LogPath is the file holding a service's program output.
func LogPath(name string) string { return filepath.Join(LogDir(name), guest.LogFile) }

func serviceDir(name string) string { return filepath.Join(servicesDir(), name) }

// Create saves cfg as a new service and defines its domain. Nothing is left
// when it fails.
func Create(cfg *config.Sandbox) (err error) {
	if cfg.Service == nil {
		cfg.Service = &config.Service{}
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := checkHost(cfg); err != nil {
		return err
	}
	dir := serviceDir(cfg.Name)
	s, err := connectService(cfg)
	if err != nil {
		return err
	}
	defer s.cleanup()
	if _, err := s.conn.LookupDomainByName(cfg.Name); err == nil {
		return fmt.Errorf("service %q: a domain of that name exists", cfg.Name)
	}
	if err := os.MkdirAll(servicesDir(), 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("service %q already exists", cfg.Name)
		}
		return err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
			os.RemoveAll(LogDir(cfg.Name))
		}
	}()
	s.stateDir = dir
	if err := s.prepareFiles(); err != nil {
		return err
	}
	return s.define()
}

// connectService connects for work on the service of cfg.
func connectService(cfg *config.Sandbox) (*service, error) {
	drv, err := driverFor(cfg.Driver)
	if err != nil {
		return nil, err
	}
	s := &service{&run{cfg: cfg, drv: drv, stopped: make(chan struct{}), stateDir: serviceDir(cfg.Name), logDir: LogDir(cfg.Name)}}
	if s.initPath, err = InitPath(); err != nil {
		return nil, err
	}
	if err := s.connect(); err != nil {
		s.cleanup()
		return nil, err
	}
	return s, nil
}

// define (re)defines the service's persistent domain from its config.
func (s *service) define() error {
	if err := os.MkdirAll(s.logDir, 0o755); err != nil {
		return fmt.Errorf("log directory: %w", err)
	}
	d, _, err := s.domain()
	if err != nil {
		return err
	}
	xml, err := d.Marshal()
	if err != nil {
		return fmt.Errorf("domain XML: %w", err)
	}
	dom, err := s.conn.DomainDefineXML(xml)
	if err != nil {
		return libvirtError("defining the service", err)
	}
	dom.Free()
	return nil
}

// openService loads a service's config and finds its domain.
func openService(name string) (*service, error) {
	cfg, err := config.Load(filepath.Join(serviceDir(name), guest.ConfigFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("service %q: %w", name, errNoService)
		}
		return nil, fmt.Errorf("service %q: %w", name, err)
	}
	s, err := connectService(cfg)
	if err != nil {
		return nil, err
	}
	dom, err := s.conn.LookupDomainByName(name)
	if err != nil {
		s.cleanup()
		return nil, libvirtError(fmt.Sprintf("service %q: its domain", name), err)
	}
	s.setDomain(dom)
	return s, nil
}

// withService runs f on the named service.
func withService(name string, f func(*service) error) error {
	s, err := openService(name)
	if err != nil {
		return err
	}
	defer s.cleanup()
	return f(s)
}

// isActive tells whether libvirt has the service's domain running.
func (s *service) isActive() (bool, error) {
	active, err := s.dom.IsActive()
	if err != nil {
		return false, libvirtError(fmt.Sprintf("service %q", s.cfg.Name), err)
	}
	return active, nil
}

// errStopped ends the relay of a stop whose domain is gone but whose
// channel has not said so.
var errStopped = errors.New("the service was stopped")

// Start starts a stopped service.
func Start(name string) error {
	return withService(name, func(s *service) error {
		s.reapMissedEnd()
		if active, err := s.isActive(); err != nil || active {
			return cmp.Or(err, fmt.Errorf("service %q is already running", name))
		}
		if s.cfg.Version != config.Version {
			// Its init would refuse the config, where nobody sees it.
			return fmt.Errorf("service %q: its config is of schema version %d, made by an older build: run virt-sandbox-service upgrade %s first", name, s.cfg.Version, name)
		}
		if err := s.dom.Create(); err != nil {
			return libvirtError(fmt.Sprintf("starting service %q", name), err)
		}
		if s.remote() {
			return s.boot()
		}
		return nil
	})
}

// boot gives a remote service's sandbox, which just started, its files
// on its first channel: its init waits for them before it starts the
// program.
func (s *service) boot() error {
	s.request = &console.Request{Boot: true}
	s.io = IO{Stdout: io.Discard, Stderr: io.Discard}
	if _, err := s.relay(); err != nil {
		s.destroy()
		return fmt.Errorf("service %q: starting: %w", s.cfg.Name, err)
	}
	return nil
}

// remoteLog copies a running remote service's log to w, following it until
// ctx ends when follow: the log is kept in the sandbox, which sends it on
// request.
func (s *service) remoteLog(ctx context.Context, w io.Writer, follow bool) error {
	signals := make(chan os.Signal, 1)
	s.request = &console.Request{Log: true, Follow: follow}
	s.io = IO{Stdout: w, Stderr: io.Discard, Signals: signals}
	stop := context.AfterFunc(ctx, func() { signals <- syscall.SIGTERM })
	defer stop()
	_, err := s.relay()
	return err
}

// keepRemoteLog appends a running remote service's log to its log file
// here, before the sandbox and its log go.
func (s *service) keepRemoteLog() error {
	if err := os.MkdirAll(s.logDir, 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(LogPath(s.cfg.Name), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	return s.remoteLog(context.Background(), f, false)
}

// Stop asks the service's program to end, waits up to timeout for the
// sandbox to stop, then destroys it.
func Stop(name string, timeout time.Duration) error {
	return withService(name, func(s *service) error {
		s.reapMissedEnd()
		if active, err := s.isActive(); err != nil || !active {
			return err
		}
		if err := s.watchStop(s.cfg.UUID); err != nil {
			return err
		}
		if s.remote() {
			if err := s.keepRemoteLog(); err != nil {
				return fmt.Errorf("service %q: keeping its log: %w", name, err)
			}
		}
		relayed := s.askToStop()
		select {
		case <-s.stopped:
		case <-time.After(timeout):
			s.destroy()
		}
		s.awaitRelay(relayed)
		return nil
	})
}

// askToStop asks the service's program to end, in a session whose relay
// ends with the domain; relayed is closed when it has.
func (s *service) askToStop() (relayed <-chan struct{}) {
	s.request = &console.Request{Stop: true}
	s.io = IO{Stdout: io.Discard, Stderr: io.Discard}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.relay()
	}()
	return done
}

// awaitRelay waits for the stop's relay to end: it must not outlive the
// connection, which the clean-up closes. A channel that has not noticed
// the domain's end within stopTimeout is failed, which ends the relay's
// read or write on it.
func (s *service) awaitRelay(relayed <-chan struct{}) {
	select {
	case <-relayed:
		return
	case <-time.After(stopTimeout):
	}
	s.failChannel(errStopped)
	<-relayed
}

// Execute runs argv in the running service with the caller's stdio and
// returns its exit status, as Run does for a one-shot sandbox.
func Execute(name string, argv []string, tty bool, stdio IO) (int, error) {
	var status int
	err := withService(name, func(s *service) error {
		if active, err := s.isActive(); err != nil || !active {
			return cmp.Or(err, fmt.Errorf("service %q is not running", name))
		}
		s.cfg.TTY = tty
		s.io = stdio
		s.request = &console.Request{Exec: argv}
		st, err := s.relay()
		status = st.ExitCode()
		if sig := s.killedBy.Load(); sig != 0 {
			status = 128 + int(sig)
		}
		return err
	})
	return status, err
}

// Connect attaches the caller's terminal to the service program's console
// until Ctrl-]; the service keeps running.
func Connect(name string, stdio IO) error {
	return withService(name, func(s *service) error {
		if active, err := s.isActive(); err != nil || !active {
			return cmp.Or(err, fmt.Errorf("service %q is not running", name))
		}
		cons, err := openStream(s.conn, func(st *libvirt.Stream) error { return s.drv.openLog(s.dom, st) })
		if err != nil {
			return libvirtError("opening the console", err)
		}
		term, err := openTerminal(stdio.Stdin, true)
		if err != nil {
			cons.Close()
			return err
		}
		defer term.restore()
		shown := make(chan struct{})
		go func() {
			defer close(shown)
			io.Copy(stdio.Stdout, cons)
		}()
		// Not awaited: a read of the caller's terminal cannot be ended.
		// Once the console is closed, what it still reads is dropped.
		go io.Copy(cons, term.stdin)
		<-term.detach
		cons.Close()
		<-shown
		return nil
	})
}

// Upgrade redefines the service's domain from its saved config, as edited
// or as this build of the tool makes it. A running service keeps running
// and gets the new definition when next started.
func Upgrade(name string) error {
	return withService(name, func(s *service) error {
		if err := s.cfg.Validate(); err != nil {
			return fmt.Errorf("service %q: %s: %w", name, filepath.Join(s.stateDir, guest.ConfigFile), err)
		}
		// A hand edit is prepared exactly as create prepares a config:
		// image formats and filesystems found, include files staged anew.
		if err := os.RemoveAll(filepath.Join(s.stateDir, guest.Includes)); err != nil {
			return err
		}
		if err := s.prepareFiles(); err != nil {
			return fmt.Errorf("service %q: %w", name, err)
		}
		return s.define()
	})
}

// Delete removes a service: domain, config and logs. A running service is
// refused unless force, which destroys it first.
func Delete(name string, force bool) error {
	return withService(name, func(s *service) error {
		s.reapMissedEnd()
		active, err := s.isActive()
		if err != nil {
			return err
		}
		if active {
			if !force {
				return fmt.Errorf("service %q is running: stop it first, or delete --force", name)
			}
			s.destroy()
		}
		if err := s.dom.Undefine(); err != nil {
			return libvirtError(fmt.Sprintf("deleting service %q", name), err)
		}
		removeLeftovers(s.cfg)
		os.RemoveAll(LogDir(name))
		return os.RemoveAll(serviceDir(name))
	})
}

// SetAutostart makes libvirt start the service when it starts, or not.
func SetAutostart(name string, on bool) error {
	return withService(name, func(s *service) error {
		if on && s.remote() {
			return errors.New("autostart: a service on a remote host gets its config from the launcher when it starts (virt-sandbox-service start), which a host starting it by itself cannot")
		}
		if err := s.dom.SetAutostart(on); err != nil {
			return libvirtError("autostart", err)
		}
		return nil
	})
}

// ServiceInfo is what list and status report.
type ServiceInfo struct {
	Name      string   `json:"name"`
	URI       string   `json:"uri"`
	State     string   `json:"state"`
	Autostart bool     `json:"autostart"`
	Command   []string `json:"command"`
	Restart   string   `json:"restart,omitempty"`
	// Addresses are a running service's IP addresses: those it was
	// given (-N address=) and those its DHCP leases say.
	Addresses []string `json:"addresses,omitempty"`
}

// Status reports one service.
func Status(name string) (ServiceInfo, error) {
	var info ServiceInfo
	err := withService(name, func(s *service) error {
		info = s.info()
		return nil
	})
	return info, err
}

// running tells whether the service runs. libvirt 9.0 now and then misses
// an LXC container's end and still reports it running: the controller's
// process tells.
func (s *service) running() bool {
	active, err := s.dom.IsActive()
	return err == nil && active && !(s.cfg.Driver == config.LXC && !s.remote() && lxcControllerGone(s.cfg.Name))
}

// reapMissedEnd destroys a container whose end libvirt missed (running
// tells), so that libvirt knows it stopped. It is a step of start, stop and
// delete, which change the service's state; status, list and logs only
// read.
func (s *service) reapMissedEnd() {
	if active, err := s.dom.IsActive(); err == nil && active && !s.running() {
		s.destroy()
	}
}

func (s *service) info() ServiceInfo {
	info := ServiceInfo{Name: s.cfg.Name, URI: s.cfg.URI, Command: s.cfg.Command.Argv, State: "stopped"}
	if s.cfg.Service != nil {
		info.Restart = s.cfg.Service.Restart
	}
	if s.running() {
		info.State = "running"
		info.Addresses = s.addresses()
	}
	info.Autostart, _ = s.dom.GetAutostart()
	return info
}

// addresses are the IP addresses of a running sandbox: its static ones from
// the config, and the leases of libvirt's DHCP server for the others.
func (s *service) addresses() []string {
	var out []string
	for _, n := range s.cfg.Networks {
		for _, a := range n.Addresses {
			ip, _, _ := strings.Cut(a, "/")
			out = append(out, ip)
		}
	}
	ifaces, err := s.dom.ListAllInterfaceAddresses(libvirt.DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE)
	if err != nil {
		return out
	}
	for _, iface := range ifaces {
		for _, a := range iface.Addrs {
			if !slices.Contains(out, a.Addr) {
				out = append(out, a.Addr)
			}
		}
	}
	return out
}

// List reports every service, by name.
func List() ([]ServiceInfo, error) {
	entries, err := os.ReadDir(servicesDir())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	var out []ServiceInfo
	for _, e := range entries {
		info, err := Status(e.Name())
		if err != nil {
			// A service whose domain is gone still shows, with why.
			info = ServiceInfo{Name: e.Name(), State: "broken: " + err.Error()}
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Logs copies the service's program output to w; with follow it keeps
// copying what is appended until ctx ends.
func Logs(ctx context.Context, name string, follow bool, w io.Writer) error {
	if _, err := os.Stat(serviceDir(name)); err != nil {
		return fmt.Errorf("service %q: %w", name, errNoService)
	}
	if cfg, err := ServiceConfig(name); err == nil && config.Remote(cfg.URI) {
		return remoteLogs(ctx, name, follow, w)
	}
	f, err := os.Open(LogPath(name))
	if errors.Is(err, os.ErrNotExist) && !follow {
		return nil
	}
	for errors.Is(err, os.ErrNotExist) {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
		f, err = os.Open(LogPath(name))
	}
	if err != nil {
		return err
	}
	defer f.Close()
	for {
		if _, err := io.Copy(w, f); err != nil {
			return err
		}
		if !follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// remoteLogs copies a remote service's log: what earlier runs left here
// (kept when they stopped), then, while it runs, the log its sandbox
// holds, following it when asked.
func remoteLogs(ctx context.Context, name string, follow bool, w io.Writer) error {
	if b, err := os.ReadFile(LogPath(name)); err == nil {
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return withService(name, func(s *service) error {
		if !s.running() {
			return nil
		}
		return s.remoteLog(ctx, w, follow)
	})
}

// ServiceConfig returns a service's saved config.
func ServiceConfig(name string) (*config.Sandbox, error) {
	cfg, err := config.Load(filepath.Join(serviceDir(name), guest.ConfigFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("service %q: %w", name, errNoService)
	}
	return cfg, err
}
