package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/virt-sandbox/virt-sandbox/config"
	"github.com/virt-sandbox/virt-sandbox/config/guest"
	"github.com/virt-sandbox/virt-sandbox/sandbox/console"
)

// service is a running service's state in its init.
type service struct {
	b        *boot
	reaper   *reaper
	log      io.Writer
	pgid     atomic.Int64 // the program's process group while it runs
	stopped  atomic.Bool
	stop     chan struct{} // closed on a stop request
	stopOnce sync.Once
	master   atomic.Pointer[os.File]
}

// runService runs the program on a terminal relayed to the log console and
// appended to the log share, restarts it per the policy, and serves execute
// and stop requests on the app channel until the program is done for good.
func runService(b *boot) error {
	// Through the sandbox's own /run: a user's mount may hide the share.
	// A remote host's sandbox has no share: the log is kept in its /run,
	// and sent to the launcher on request.
	if filesOnChannel() {
		if err := b.ownRun.MkdirAll(inRun(guest.Log), 0o755); err != nil {
			return fmt.Errorf("service log: %w", err)
		}
	}
	logFile, err := b.ownRun.OpenFile(inRun(filepath.Join(guest.Log, guest.LogFile)), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("service log: %w", err)
	}
	defer logFile.Close()
	s := &service{b: b, reaper: newReaper(), stop: make(chan struct{})}
	// The console is the service's terminal: raw, so keys reach the
	// program's own terminal as typed.
	// The program's terminal ends lines with \r\n; the log file gets \n.
	s.log = &crlfWriter{w: logFile}
	if _, err := term.MakeRaw(int(os.Stdin.Fd())); err == nil {
		s.log = io.MultiWriter(s.log, consoleWriter())
	}
	go s.forwardConsoleInput()
	go s.serveRequests()

	policy := b.cfg.Service
	max := policy.MaxRestarts
	if max == 0 {
		max = config.DefaultMaxRestarts
	}
	for restarts := 0; ; restarts++ {
		st, err := s.runOnce()
		if err != nil {
			s.note("%v", err)
		} else {
			s.note("program exited with status %d", st.ExitCode())
		}
		if s.stopped.Load() || policy.Restart != "on-failure" || (err == nil && st.ExitCode() == 0) {
			break
		}
		if restarts == max {
			s.note("not restarting: %d restarts already", max)
			break
		}
		// Back-off doubles from 1 s, up to 30 s, so a crashing program
		// does not spin.
		wait := min(time.Second<<restarts, 30*time.Second)
		s.note("restarting in %v (restart %d of %d)", wait, restarts+1, max)
		select {
		case <-time.After(wait):
		case <-s.stop:
		}
		if s.stopped.Load() {
			break
		}
	}
	unix.Kill(-1, unix.SIGKILL)
	return nil
}

// note puts the init's own word about the service in the log.
func (s *service) note(format string, args ...any) {
	fmt.Fprintf(s.log, "virt-sandbox-init: %s\r\n", fmt.Sprintf(format, args...))
}

// runOnce runs the program once on a fresh terminal and waits for it.
func (s *service) runOnce() (console.Status, error) {
	cmd, err := command(s.b.cfg, s.b.resolved.IDMap, s.b.cfg.Command.Argv)
	if err != nil {
		return console.Status{}, err
	}
	var size console.WinSize
	if rows, cols, err := pty.Getsize(os.Stdin); err == nil {
		size = console.WinSize{Rows: uint16(rows), Cols: uint16(cols)}
	}
	master, err := startOnPTY(cmd, size)
	if err != nil {
		return console.Status{}, execFailure(cmd.program, err)
	}
	defer master.Close()
	exited := s.reaper.await(cmd.Process.Pid)
	s.pgid.Store(int64(cmd.Process.Pid))
	s.master.Store(master)
	done := make(chan struct{})
	go func() {
		io.Copy(s.log, master)
		close(done)
	}()
	st := <-exited
	s.master.Store(nil)
	s.pgid.Store(0)
	// What it left behind in its session goes with it.
	unix.Kill(-cmd.Process.Pid, unix.SIGKILL)
	<-done
	return st, nil
}

// forwardConsoleInput passes what is typed on the console (a connect
// session) to the program's terminal.
func (s *service) forwardConsoleInput() {
	buf := make([]byte, 4096)
	for {
		n, err := os.Stdin.Read(buf)
		if m := s.master.Load(); m != nil && n > 0 {
			m.Write(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

// serveRequests answers the launcher's requests: one session at a time on
// each app channel, on all of them at once.
func (s *service) serveRequests() {
	go s.serveChannel(s.b.channel, s.b.guest)
	for i := 1; i < guest.SessionChannels; i++ {
		ch, err := s.b.openChannel(i)
		if err != nil {
			// A service defined by an older build has fewer channels.
			s.note("session channel %d: %v", i, err)
			return
		}
		go s.serveChannel(ch, nil)
	}
}

// serveChannel answers the requests of the sessions on one app channel;
// the first may be the boot session, whose hello came with the run's files.
func (s *service) serveChannel(channel *os.File, boot *console.Guest) {
	for {
		g := boot
		boot = nil
		if g == nil {
			var err error
			if g, err = console.Accept(channel); err != nil {
				return
			}
		}
		req := g.Request()
		switch {
		case req == nil || (len(req.Exec) == 0 && !req.Stop && !req.Boot && !req.Log):
			g.Fail(&console.Failed{Status: 125, Message: "this sandbox runs a service: ask it to execute a command or to stop"})
		case req.Boot:
			g.Serve(console.Program{Stdin: nopWriteCloser{}, Wait: func() console.Status { return console.Status{} }})
		case req.Log:
			s.serveLog(g, req.Follow)
		case req.Stop:
			s.requestStop()
			g.Serve(console.Program{Stdin: nopWriteCloser{}, Wait: func() console.Status { return console.Status{} }})
		default:
			err := relay(s.b, g, req.Exec, func(pid int) console.Status {
				st := <-s.reaper.await(pid)
				unix.Kill(-pid, unix.SIGKILL)
				return st
			})
			var f *console.Failed
			if err != nil && errors.As(err, &f) {
				g.Fail(f)
			} else if err != nil {
				g.Fail(&console.Failed{Status: 125, Message: err.Error()})
			}
		}
	}
}

// serveLog sends the program's log, and with follow what is appended to
// it, until the host sends a signal.
func (s *service) serveLog(g *console.Guest, follow bool) {
	f, err := s.b.ownRun.Open(inRun(filepath.Join(guest.Log, guest.LogFile)))
	if err != nil {
		g.Fail(&console.Failed{Status: 125, Message: fmt.Sprintf("service log: %v", err)})
		return
	}
	defer f.Close()
	lr := &logReader{f: f, follow: follow, done: make(chan struct{})}
	var once sync.Once
	g.Serve(console.Program{
		Stdin:  nopWriteCloser{},
		Stdout: lr,
		Signal: func(syscall.Signal) { once.Do(func() { close(lr.done) }) },
		Wait:   func() console.Status { return console.Status{} },
	})
}

// logReader reads a log to its end; following, it waits for more until
// done.
type logReader struct {
	f      *os.File
	follow bool
	done   chan struct{}
}

func (l *logReader) Read(p []byte) (int, error) {
	for {
		n, err := l.f.Read(p)
		if n > 0 || err != io.EOF || !l.follow {
			return n, err
		}
		select {
		case <-l.done:
			return 0, io.EOF
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// requestStop ends the program for good: SIGTERM to its group and no
// restart. Stop sessions may come on several channels at once.
func (s *service) requestStop() {
	s.stopOnce.Do(func() {
		s.stopped.Store(true)
		if pg := s.pgid.Load(); pg != 0 {
			unix.Kill(-int(pg), unix.SIGTERM)
		}
		close(s.stop)
	})
}

// consoleWriter writes to the log console without ever blocking: when
// nobody is connected its buffer fills, and the program must not stall.
// What does not fit is dropped; the log file has it all.
func consoleWriter() io.Writer {
	// An open of its own: the flag must not reach the reading side.
	fd, err := unix.Open("/dev/console", unix.O_WRONLY|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return io.Discard
	}
	return nonBlockingWriter(fd)
}

type nonBlockingWriter int

func (w nonBlockingWriter) Write(p []byte) (int, error) {
	unix.Write(int(w), p)
	return len(p), nil
}

// crlfWriter drops the \r of each \r\n, also across writes.
type crlfWriter struct {
	w       io.Writer
	pending bool // a \r ended the last write
}

func (c *crlfWriter) Write(p []byte) (int, error) {
	out := make([]byte, 0, len(p)+1)
	for i, b := range p {
		if c.pending {
			c.pending = false
			if b != '\n' {
				out = append(out, '\r')
			}
		}
		if b == '\r' {
			if i+1 < len(p) && p[i+1] == '\n' {
				continue
			}
			if i+1 == len(p) {
				c.pending = true
				continue
			}
		}
		out = append(out, b)
	}
	_, err := c.w.Write(out)
	return len(p), err
}

type nopWriteCloser struct{}

func (nopWriteCloser) Write(p []byte) (int, error) { return len(p), nil }
func (nopWriteCloser) Close() error                { return nil }

// reaper reaps every child of PID 1 and hands each exit to whoever awaits
// that process. An exit reaped before it is awaited is kept a while, since a
// process may end before its starter gets to await it.
type reaper struct {
	mu      sync.Mutex
	waiting map[int]chan console.Status
	early   map[int]earlyExit
}

type earlyExit struct {
	st console.Status
	at time.Time
}

// earlyKept is how long an exit nobody awaits is kept: orphans that PID 1
// inherits are never awaited.
const earlyKept = time.Minute

func newReaper() *reaper {
	r := &reaper{waiting: map[int]chan console.Status{}, early: map[int]earlyExit{}}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGCHLD)
	go func() {
		for range sigs {
			r.reapAll()
		}
	}()
	return r
}

// await returns where the exit of pid is delivered.
func (r *reaper) await(pid int) <-chan console.Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	ch := make(chan console.Status, 1)
	if e, ok := r.early[pid]; ok {
		ch <- e.st
		delete(r.early, pid)
		return ch
	}
	r.waiting[pid] = ch
	return ch
}

func (r *reaper) reapAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	for pid, e := range r.early {
		if now.Sub(e.at) > earlyKept {
			delete(r.early, pid)
		}
	}
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
		var st console.Status
		if ws.Signaled() {
			st.Signal = int(ws.Signal())
		} else {
			st.Code = ws.ExitStatus()
		}
		if ch, ok := r.waiting[pid]; ok {
			ch <- st
			delete(r.waiting, pid)
		} else {
			r.early[pid] = earlyExit{st, now}
		}
	}
}
