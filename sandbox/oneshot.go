package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"libvirt.org/go/libvirt"

	"github.com/virt-sandbox/virt-sandbox/config"
	"github.com/virt-sandbox/virt-sandbox/config/guest"
	"github.com/virt-sandbox/virt-sandbox/sandbox/console"
)

// oneShot is a sandbox that lives for one run of its program: a transient
// domain (or a template slot's restored machine) in a state directory of
// its own, destroyed and removed on every path out of Run.
type oneShot struct {
	*run
	timedOut atomic.Bool
	// domUUID is the UUID of a machine restored from a template, whose
	// domain is the template slot's, not the config's.
	domUUID string
}

// Run starts the sandbox cfg describes, relays its program and returns the
// program's exit status. Errors mean the program did not run to its end: a
// *console.Failed carries its own status, anything else is a failure to
// launch (status 125).
func Run(cfg *config.Sandbox, stdio IO) (status int, err error) {
	if err := cfg.Validate(); err != nil {
		return 0, err
	}
	if err := checkHost(cfg); err != nil {
		return 0, err
	}
	drv, err := driverFor(cfg.Driver)
	if err != nil {
		return 0, err
	}
	if isEmbedded(cfg.URI) {
		// Before anything uses libvirt, and restored after the
		// clean-ups, which use it too.
		restore, err := divertEmbedLogs(cfg.URI, cfg.Debug, &stdio)
		if err != nil {
			return 0, err
		}
		defer restore()
	}
	r := newOneShot(cfg, drv, stdio)
	defer r.cleanup()
	disarm := r.armTimeout()
	defer disarm()
	if launched, status, err := r.launch(); !launched {
		return status, err
	}
	return r.outcome(r.relay())
}

func newOneShot(cfg *config.Sandbox, drv driver, stdio IO) *oneShot {
	r := &oneShot{run: &run{cfg: cfg, drv: drv, io: stdio, stopped: make(chan struct{})}}
	r.announced = r.forgetConfig
	// Registered before the other clean-ups, so it runs after the domain
	// is gone and any destroy has ended (else libvirt writes the log again).
	r.onCleanup(func() {
		r.destroying.Lock()
		defer r.destroying.Unlock()
		removeLeftovers(cfg)
	})
	return r
}

// armTimeout destroys the sandbox once the config's Timeout has passed. It
// returns the disarming, which waits for a destroy under way: it runs
// before the cleanup frees the domain.
func (r *oneShot) armTimeout() (disarm func()) {
	if r.cfg.Timeout <= 0 {
		return func() {}
	}
	fired := make(chan struct{})
	timer := time.AfterFunc(r.cfg.Timeout, func() {
		defer close(fired)
		r.timedOut.Store(true)
		r.destroy()
	})
	return func() {
		if !timer.Stop() {
			<-fired
		}
	}
}

// launch takes the named steps up to a started machine, timing each for
// -d. When it did not get there, status and err are Run's: 128+N for a
// caller's signal during an upload, else the error.
func (r *oneShot) launch() (launched bool, status int, err error) {
	for _, s := range []struct {
		name string
		do   func() error
	}{
		{"connect", r.connect},
		{"state", r.prepareState},
		{"start", r.start},
	} {
		t := time.Now()
		if err := s.do(); err != nil {
			if sig := r.killedBy.Load(); sig != 0 {
				// Interrupted before the program ran (an upload).
				return false, 128 + int(sig), nil
			}
			return false, 0, err
		}
		if r.timedOut.Load() {
			r.destroy()
			return false, 0, r.timeoutError()
		}
		r.debugf("%s: %v", s.name, time.Since(t).Round(time.Microsecond))
	}
	return true, 0, nil
}

// outcome is Run's answer for the relay's: the run's own ends (the
// connection lost, the timeout, a start that did not come, the caller's
// signal) first, then the program's.
func (r *oneShot) outcome(st console.Status, err error) (int, error) {
	if r.connLost.Load() {
		return 0, r.reclaim()
	}
	if r.timedOut.Load() {
		return 0, r.timeoutError()
	}
	if r.notStarted.Load() {
		return 0, r.notStartedError()
	}
	if sig := r.killedBy.Load(); sig != 0 {
		return 128 + int(sig), nil
	}
	var failed *console.Failed
	switch {
	case errors.Is(err, console.ErrEnded):
		// The sandbox died by itself: its log may say why.
		r.awaitStop()
		if reason := bootFailure(filepath.Join(r.stateDir, consoleLog)); reason != "" {
			err = fmt.Errorf("%w: %s", err, reason)
		}
		return 0, err
	case err != nil && !errors.As(err, &failed):
		r.destroy()
		return 0, err
	}
	// The init ends by itself once the host acknowledged the exit or the
	// failure; a destroy would only be slower.
	r.awaitStop()
	return st.ExitCode(), err
}

func (r *oneShot) timeoutError() error {
	return fmt.Errorf("%w after %v: the sandbox was destroyed", ErrTimeout, r.cfg.Timeout)
}

// start starts the run's machine: from a template when it can (template.go),
// else as a transient domain. START_AUTODESTROY ties its life to our
// connection, so a launcher that is killed leaves no domain behind.
func (r *oneShot) start() error {
	d, p, err := r.domain()
	if err != nil {
		return err
	}
	if why := templateRefusal(r.cfg); why != "" {
		if r.cfg.Driver == config.QEMU {
			r.debugf("booting cold: %s", why)
		}
	} else if started, err := r.startFromTemplate(d, p); started || err != nil {
		return err
	}
	xml, err := d.Marshal()
	if err != nil {
		return fmt.Errorf("domain XML: %w", err)
	}
	if err := r.watchStop(r.cfg.UUID); err != nil {
		return err
	}
	flags := libvirt.DOMAIN_START_AUTODESTROY
	if isEmbedded(r.cfg.URI) {
		flags = 0
	}
	r.created = time.Now()
	dom, err := r.conn.DomainCreateXML(xml, flags)
	if err != nil {
		return libvirtError("starting the sandbox", err)
	}
	r.setDomain(dom)
	if isEmbedded(r.cfg.URI) {
		// The embedded driver runs in this process and cannot autodestroy;
		// its QEMU is this process's child and is destroyed on every path
		// out of Run. Registered after setDomain, so it runs before the
		// domain is freed (libvirt logged "invalid domain pointer").
		r.onCleanup(r.destroyIfActive)
	}
	return nil
}

// forgetConfig removes the config from the state directory once the init
// has read it: it holds the program's arguments and environment, which may
// be secrets, and nothing reads it again.
func (r *oneShot) forgetConfig() {
	os.Remove(filepath.Join(r.stateDir, guest.ConfigFile))
}

func (r *oneShot) destroyIfActive() {
	if r.dom == nil {
		return
	}
	if active, err := r.dom.IsActive(); err == nil && active {
		r.destroy()
	}
}

// awaitStop waits for the domain to go away after the program ended; the
// init ends right after the host acknowledged the exit.
func (r *oneShot) awaitStop() {
	if active, err := r.dom.IsActive(); err != nil || !active {
		return
	}
	select {
	case <-r.stopped:
	case <-time.After(stopTimeout):
		r.debugf("the sandbox did not stop within %v; destroying it", stopTimeout)
		r.destroy()
	}
}

// domainUUID is the UUID of the run's domain.
func (r *oneShot) domainUUID() string {
	if r.domUUID != "" {
		return r.domUUID
	}
	return r.cfg.UUID
}

// reconnectWait bounds the wait for libvirtd to come back after the
// connection closed under a run.
const reconnectWait = 30 * time.Second

// reclaim destroys the sandbox of a run whose connection closed: the
// domain may outlive libvirtd (a QEMU machine does, and libvirtd takes it
// back when it restarts), and nothing must outlive the run. It reconnects
// for a while to do so and returns the run's error.
func (r *oneShot) reclaim() error {
	for deadline := time.Now().Add(reconnectWait); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		conn, err := connect(r.cfg.URI)
		if err != nil {
			continue
		}
		defer conn.Close()
		if dom, err := conn.LookupDomainByUUIDString(r.domainUUID()); err == nil {
			dom.Destroy()
			dom.Free()
		}
		return fmt.Errorf("%w while the sandbox ran (libvirtd stopped or restarted): the sandbox was destroyed", errConnLost)
	}
	return fmt.Errorf("%w while the sandbox ran and libvirtd did not come back within %v: domain %s may still run", errConnLost, reconnectWait, r.cfg.Name)
}
