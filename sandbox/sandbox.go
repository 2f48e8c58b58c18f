// Package sandbox is the host side of a sandbox: it turns a validated config
// into a libvirt domain for the config's driver, starts it, relays the
// program's stdio over the app channel with the console protocol and cleans
// up, so that nothing outlives the run.
package sandbox

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/virt-sandbox/virt-sandbox/config"
	"github.com/virt-sandbox/virt-sandbox/config/guest"
	"github.com/virt-sandbox/virt-sandbox/sandbox/console"
	"github.com/virt-sandbox/virt-sandbox/sandbox/hostdirs"
)

// IO is the caller's side of the program's stdio.
type IO struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Signals delivers the caller's SIGINT, SIGTERM, SIGHUP and SIGQUIT,
	// which are forwarded to the program, and SIGWINCH.
	Signals <-chan os.Signal
}

// Grace is how long a forwarded SIGINT, SIGTERM, SIGHUP or SIGQUIT may take
// to end the program before the sandbox is destroyed. A second signal
// destroys it at once.
const Grace = 10 * time.Second

// ErrTimeout is returned when the run outlived its config's Timeout and the
// sandbox was destroyed.
var ErrTimeout = errors.New("timed out")

// ErrDetached is returned when the caller detached from a terminal session
// with Ctrl-]: the sandbox was destroyed.
var ErrDetached = errors.New("detached: the sandbox was destroyed")

// driver is what differs between LXC and QEMU sandboxes.
type driver interface {
	// prepare does all the I/O the run's domain needs (finds, makes,
	// uploads, attaches, probes; clean-ups go on the run's stack) and
	// returns what it resolved.
	prepare(r *run) (*plan, error)
	// describe is the domain of cfg as p planned it: pure, it touches
	// nothing.
	describe(cfg *config.Sandbox, p *plan) *libvirtxml.Domain
	// openChannel opens app channel i; libvirt refuses one that another
	// client has open.
	openChannel(dom *libvirt.Domain, i int, st *libvirt.Stream) error
	openLog(dom *libvirt.Domain, st *libvirt.Stream) error
}

func driverFor(d config.Driver) (driver, error) {
	switch d {
	case config.LXC:
		return lxcDriver{}, nil
	case config.QEMU:
		return qemuDriver{}, nil
	}
	return nil, fmt.Errorf("%w: unknown driver %q", config.ErrInvalid, d)
}

// run is what one-shot runs (oneShot, oneshot.go) and services (service,
// service.go) share: the config and its driver, the connection, the domain,
// the state directory, the cleanup stack, and the relay of one session on
// an app channel (a one-shot run's program; a service's execute, stop, boot
// or log). Each owner adds the steps only it takes; the domain builders see
// this core alone.
type run struct {
	cfg *config.Sandbox
	// resolved is what prepareFiles and the driver found out or set up
	// for the run, saved for the init beside cfg.
	resolved guest.Resolved
	drv      driver
	io       IO
	conn     *libvirt.Connect
	dom      *libvirt.Domain
	stateDir string
	initPath string
	stopped  chan struct{}
	stopOnce sync.Once
	cleanups []func()
	// killedBy is the caller's signal that made us destroy the sandbox.
	killedBy atomic.Int32
	detached atomic.Bool
	// notStarted is set when the init did not announce itself in time;
	// the start deadline counts from created, when the domain was asked
	// for (or the session began, for a running service).
	notStarted atomic.Bool
	created    time.Time
	// announced, when set, is called once the init announced itself.
	announced func()
	// connLost is set when the connection to libvirt closed under us;
	// channel, while the relay runs, is failed then.
	connLost atomic.Bool
	chanMu   sync.Mutex
	channel  channel
	// chanFailure, once set, fails the relay's channel, now or when it
	// opens.
	chanFailure error
	// domMu guards dom against the timeout, which may fire at any step.
	domMu sync.Mutex
	// destroying is held while a destroy is under way, often in another
	// goroutine (a signal, the timeout): the relay ends as soon as QEMU is
	// killed, before libvirt has written the end of the domain's log.
	destroying sync.Mutex
	// logDir is a service's log share.
	logDir string
	// request, for a service, is what to ask of it instead of running
	// the configured program.
	request *console.Request
}

func (r *run) debugf(format string, args ...any) {
	if r.cfg.Debug {
		fmt.Fprintf(r.io.Stderr, "virt-sandbox: "+format+"\n", args...)
	}
}

func (r *run) cleanup() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

func (r *run) onCleanup(f func()) { r.cleanups = append(r.cleanups, f) }

func (r *run) connect() error {
	if isEmbedded(r.cfg.URI) {
		// The embedded driver reads its configuration when connecting.
		if err := prepareEmbedRoot(r.cfg.URI); err != nil {
			return err
		}
	}
	conn, err := connect(r.cfg.URI)
	if err != nil {
		return err
	}
	r.conn = conn
	r.onCleanup(func() { conn.Close() })
	if err := conn.RegisterCloseCallback(func(*libvirt.Connect, libvirt.ConnectCloseReason) { r.lostConnection() }); err != nil {
		return libvirtError("watching the connection", err)
	}
	r.onCleanup(func() { conn.UnregisterCloseCallback() })
	return checkSecurityDriver(conn, r.cfg.Security)
}

// errConnLost ends a relay whose libvirt connection closed.
var errConnLost = errors.New("the connection to libvirt closed")

// lostConnection is told by libvirt that the connection closed (libvirtd
// stopped or restarted): the channel's stream cannot tell by itself.
func (r *run) lostConnection() {
	r.connLost.Store(true)
	r.failChannel(errConnLost)
}

// failChannel ends the relay on the channel with err: the channel it has
// open, or the one it opens next.
func (r *run) failChannel(err error) {
	r.chanMu.Lock()
	defer r.chanMu.Unlock()
	if r.chanFailure == nil {
		r.chanFailure = err
	}
	if r.channel != nil {
		r.channel.fail(err)
	}
}

// setChannel records the relay's channel for failChannel.
func (r *run) setChannel(ch channel) {
	r.chanMu.Lock()
	defer r.chanMu.Unlock()
	r.channel = ch
	if ch != nil && r.chanFailure != nil {
		ch.fail(r.chanFailure)
	}
}

// domain prepares the run's plan, describes its domain and saves the
// config, with what was resolved for the run, into the config share.
func (r *run) domain() (*libvirtxml.Domain, *plan, error) {
	p, err := r.drv.prepare(r)
	if err != nil {
		return nil, nil, err
	}
	if err := r.cfg.Save(filepath.Join(r.stateDir, guest.ConfigFile), &r.resolved); err != nil {
		return nil, nil, stateError(err)
	}
	return r.drv.describe(r.cfg, p), p, nil
}

func (r *run) setDomain(dom *libvirt.Domain) {
	r.domMu.Lock()
	r.dom = dom
	r.domMu.Unlock()
	r.onCleanup(func() { dom.Free() })
}

// watchStop arranges for r.stopped to close when the domain of uuid stops.
func (r *run) watchStop(uuid string) error {
	cb, err := r.conn.DomainEventLifecycleRegister(nil, func(_ *libvirt.Connect, d *libvirt.Domain, ev *libvirt.DomainEventLifecycle) {
		if ev.Event != libvirt.DOMAIN_EVENT_STOPPED {
			return
		}
		if got, err := d.GetUUIDString(); err == nil && got == uuid {
			r.stopOnce.Do(func() { close(r.stopped) })
		}
	})
	if err != nil {
		return libvirtError("watching domain events", err)
	}
	r.onCleanup(func() { r.conn.DomainEventDeregister(cb) })
	return nil
}

// relay opens the app channel and speaks the console protocol on it.
func (r *run) relay() (console.Status, error) {
	stopLog := func() {}
	if r.cfg.Debug {
		stopLog = r.followLog()
	}
	defer stopLog() // on the paths out before the channel is open
	channel, index, err := r.openChannel()
	if err != nil {
		return console.Status{}, err
	}
	defer channel.Close()
	// Before the channel closes: a machine ends once its launcher closed
	// the channel (console.Guest.AwaitHangup), and no console stream of
	// libvirt's may be closing then.
	defer stopLog()
	r.setChannel(channel)
	defer r.setChannel(nil)
	term, err := openTerminal(r.io.Stdin, r.cfg.TTY)
	if err != nil {
		return console.Status{}, err
	}
	defer term.restore()
	signals := make(chan syscall.Signal, 4)
	resizes := make(chan console.WinSize, 4)
	host, finish, err := r.consoleHost(term, index, signals, resizes)
	if err != nil {
		return console.Status{}, err
	}
	defer finish()
	done := make(chan struct{})
	// The relay's helpers end with done, and it returns once they have:
	// none of them acts on the domain after the run's cleanup.
	var helpers sync.WaitGroup
	defer func() {
		close(done)
		helpers.Wait()
	}()
	if r.created.IsZero() {
		r.created = time.Now()
	}
	announced := make(chan struct{})
	host.Started = func() {
		if time.Since(r.created) > r.startDeadline() {
			// Too late, though the timer has not told yet.
			r.notStarted.Store(true)
			r.destroy()
			return
		}
		close(announced)
		if r.announced != nil {
			r.announced()
		}
	}
	helpers.Go(func() { r.awaitStart(announced, done) })
	helpers.Go(func() { r.handleSignals(term, signals, resizes, done) })
	status, err := host.Run(channel)
	if r.detached.Load() {
		return status, ErrDetached
	}
	return status, err
}

// channel is an app channel as the relay uses it.
type channel interface {
	io.ReadWriteCloser
	// fail ends a Read or Write waiting on the channel with err.
	fail(err error)
}

// openChannel opens the first app channel no other session holds: a
// service has several, so that sessions run side by side. Sessions hold a
// lock per channel in the service's directory while they run: libvirt's
// LXC driver lets any number of clients open one console.
func (r *run) openChannel() (channel, int, error) {
	n := guest.AppChannels(r.cfg.Service != nil)
	if n == 1 || (r.request != nil && r.request.Boot) {
		// A remote service's init takes its files on the first
		// channel, before it serves sessions.
		ch, err := r.openChannelNumber(0)
		return ch, 0, err
	}
	for i := range n {
		lock, err := lockSession(r.stateDir, i)
		if err != nil {
			continue
		}
		ch, err := r.openChannelNumber(i)
		if err != nil {
			lock.Close()
			return nil, 0, err
		}
		r.onCleanup(func() { lock.Close() })
		return ch, i, nil
	}
	return nil, 0, fmt.Errorf("the service already has %d sessions (execute, stop) under way: try again when one has ended", n)
}

// openChannelNumber opens app channel i. A local QEMU machine's channel is
// a socket of ours that QEMU listens on: the launcher connects to it
// directly, and the program's stdio does not cross libvirtd.
func (r *run) openChannelNumber(i int) (channel, error) {
	if r.cfg.Driver == config.QEMU && isLocal(r.cfg.URI) {
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: appSocket(r.stateDir, i), Net: "unix"})
		if err != nil {
			return nil, fmt.Errorf("opening the sandbox's channel: %w", err)
		}
		return socketChannel{c}, nil
	}
	ch, err := openStream(r.conn, func(st *libvirt.Stream) error { return r.drv.openChannel(r.dom, i, st) })
	if err != nil {
		return nil, libvirtError("opening the sandbox's channel", err)
	}
	return ch, nil
}

// socketChannel is an app channel on a UNIX socket.
type socketChannel struct{ *net.UnixConn }

func (s socketChannel) fail(error) { s.Close() }

// isLocal tells a libvirt URI of this machine from a remote one.
func isLocal(uri string) bool { return !config.Remote(uri) }

// lockSession takes the lock of a service's session channel i, or fails
// at once when another session holds it.
func lockSession(serviceDir string, i int) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(serviceDir, fmt.Sprintf(".session-%d.lock", i)), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// awaitStart destroys the sandbox when its init has not announced itself
// within the start deadline: nothing waits forever on a guest that hangs
// while it boots.
func (r *run) awaitStart(announced, done <-chan struct{}) {
	t := time.NewTimer(time.Until(r.created.Add(r.startDeadline())))
	defer t.Stop()
	select {
	case <-announced:
	case <-done:
	case <-t.C:
		r.notStarted.Store(true)
		r.destroy()
	}
}

// Start deadlines unless --start-timeout says: a QEMU machine under TCG
// boots in about 5 s alone and several times slower beside others on a
// busy host; a container starts in well under a second.
const (
	qemuStartDeadline = 3 * time.Minute
	lxcStartDeadline  = 30 * time.Second
)

func (r *run) startDeadline() time.Duration {
	switch {
	case r.cfg.StartTimeout > 0:
		return r.cfg.StartTimeout
	case r.cfg.Driver == config.QEMU:
		return qemuStartDeadline
	}
	return lxcStartDeadline
}

func (r *run) notStartedError() error {
	return fmt.Errorf("the sandbox did not start within %v (--start-timeout); last seen: %s", r.startDeadline(), r.lastSeen())
}

// lastSeen is the last word of a sandbox that did not start: the kernel's
// or the init's complaint, else the console's last line.
func (r *run) lastSeen() string {
	logs := []string{filepath.Join(r.stateDir, consoleLog), filepath.Join(lxcLogDir, r.cfg.Name+".log")}
	for _, log := range logs {
		if reason := bootFailure(log); reason != "" {
			return reason
		}
	}
	for _, log := range logs {
		if line := lastLine(log); line != "" {
			return line
		}
	}
	return "nothing on its console (-d shows the init's steps)"
}

// lastLine is the last line of a log that says something: not empty, and
// not one of the command lines or "starting up" stamps libvirt writes
// there itself.
func lastLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(string(b), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		line := strings.TrimSpace(lines[i])
		if line != "" && !strings.HasPrefix(line, "PATH=") && !strings.HasSuffix(line, ": starting up") {
			return line
		}
	}
	return ""
}

// consoleHost is the host's end of the session on app channel index:
// the program's stdio as the run carries it (the caller's descriptors
// handed over, the data ports, or frames), the run's files for a remote
// host. finish ends the handover, if any.
func (r *run) consoleHost(term *terminal, index int, signals chan syscall.Signal, resizes chan console.WinSize) (host *console.Host, finish func(), err error) {
	host = &console.Host{
		Request: r.request,
		Stdin:   term.stdin,
		Stdout:  r.io.Stdout,
		Stderr:  r.io.Stderr,
		TTY:     r.cfg.TTY,
		Size:    term.size(),
		Signals: signals,
		Resizes: resizes,
	}
	finish = func() {}
	if r.handsOverStdio() {
		var handover *console.Handover
		if handover, finish, err = r.stdioHandover(index); err != nil {
			return nil, nil, err
		}
		// The program reads its stdin itself: the relay must not.
		host.Stdin, host.Handover = nil, handover
	}
	if r.remote() && (r.request == nil || r.request.Boot) {
		host.Files = r.runFiles()
	}
	if r.usesDataPorts() {
		r.debugf("stdio: on the data ports")
		host.DialPorts = r.dialDataPorts
	}
	return host, finish, nil
}

// followLog copies the sandbox's log console to stderr until the
// returned stop, which lets what is on its way arrive (the init's last
// step lines follow the program's end), closes the stream and waits for
// the copy to end; it may be called more than once.
func (r *run) followLog() (stop func()) {
	log, err := openStream(r.conn, func(st *libvirt.Stream) error { return r.drv.openLog(r.dom, st) })
	if err != nil {
		r.debugf("log console: %v", err)
		return func() {}
	}
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		buf := make([]byte, 32<<10)
		for {
			n, err := log.Read(buf)
			last.Store(time.Now().UnixNano())
			r.io.Stderr.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			for quiet := time.Now().Add(time.Second); time.Now().Before(quiet) &&
				time.Since(time.Unix(0, last.Load())) < logSettle; {
				time.Sleep(logSettle / 4)
			}
			log.Close()
			<-copied
		})
	}
}

// logSettle is how long the log console must stay quiet before it is
// closed at the end of a run.
const logSettle = 100 * time.Millisecond

// handleSignals forwards the caller's signals to the program and destroys
// the sandbox when the program outlives the grace period, a second signal
// arrives or the caller detaches.
func (r *run) handleSignals(t *terminal, signals chan<- syscall.Signal, resizes chan<- console.WinSize, done <-chan struct{}) {
	var grace <-chan time.Time
	var pending syscall.Signal
	for {
		select {
		case <-done:
			return
		case <-t.detach:
			r.detached.Store(true)
			r.destroy()
			return
		case <-grace:
			r.killedBy.Store(int32(pending))
			r.destroy()
			return
		case sig := <-r.io.Signals:
			s, _ := sig.(syscall.Signal)
			switch {
			case s == syscall.SIGWINCH:
				select {
				case resizes <- t.size():
				case <-done:
					return
				}
			case grace != nil:
				r.killedBy.Store(int32(s))
				r.destroy()
				return
			default:
				pending = s
				select {
				case signals <- s:
				case <-done:
					return
				}
				grace = time.After(Grace)
			}
		}
	}
}

// destroy ends the domain at once: only on errors, interrupts and detaches,
// since the normal end (PID 1 exits or powers off) is much faster.
func (r *run) destroy() {
	r.destroying.Lock()
	defer r.destroying.Unlock()
	r.domMu.Lock()
	dom := r.dom
	r.domMu.Unlock()
	if dom == nil {
		return
	}
	if err := dom.Destroy(); err != nil {
		r.debugf("destroy: %v", err)
	}
}

// removeLeftovers removes what libvirt keeps of a transient domain of a
// local connection once it is gone: its log, and the LXC driver's
// directories and socket. Each one-shot run has a name of its own, so
// they would pile up by the thousand.
func removeLeftovers(cfg *config.Sandbox) {
	if !isLocal(cfg.URI) {
		return
	}
	switch cfg.Driver {
	case config.LXC:
		removeLXCLeftovers(cfg.Name)
	case config.QEMU:
		removeQEMULog(cfg.URI, cfg.Name)
	}
}

// removeQEMULog removes libvirt's log of the machine name.
func removeQEMULog(uri, name string) {
	switch uri {
	case "qemu:///system":
		os.Remove(filepath.Join(qemuSystemLogDir, name+".log"))
		removeVirtiofsdLogs(qemuSystemLogDir, name)
	case "qemu:///session":
		os.Remove(filepath.Join(hostdirs.LibvirtSessionLogs(), name+".log"))
	}
}

// qemuSystemLogDir holds qemu:///system's log of each machine (virtlogd
// writes it as root: a caller that is not root cannot remove it).
const qemuSystemLogDir = "/var/log/libvirt/qemu"

// isEmbedded tells libvirt's in-process drivers (qemu:///embed?root=DIR).
func isEmbedded(uri string) bool { return strings.Contains(uri, ":///embed") }

// stopTimeout bounds the wait for a sandbox to stop by itself once its
// program has ended.
const stopTimeout = 10 * time.Second

// bootFailure finds in a console log the line that tells why a machine died
// before its program ran: a kernel panic or the init's own complaint.
func bootFailure(logPath string) string {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return ""
	}
	var reason string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if _, msg, ok := strings.Cut(line, "Kernel panic - not syncing: "); ok {
			return "kernel panic: " + msg
		}
		// The init's debug lines carry a "[   0.100s]" time stamp.
		if msg, ok := strings.CutPrefix(line, "virt-sandbox-init: "); ok && !strings.HasPrefix(msg, "[") {
			reason = line
		}
	}
	return reason
}
