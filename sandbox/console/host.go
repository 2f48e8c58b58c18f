package console

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
)

// ErrVersion is returned when the two ends speak different protocol versions.
var ErrVersion = errors.New("console protocol version mismatch")

// ErrEnded is returned when the channel ends before the program's exit was
// reported, for instance because the sandbox died.
var ErrEnded = errors.New("sandbox ended before the program's exit was reported")

// StdinWindow is how many stdin bytes the host sends before the guest
// acknowledges them: the bound on stdin buffered inside the sandbox, and what
// lets the guest keep reading signals while the program ignores its stdin.
const StdinWindow = 1 << 20

// Host is the launcher's end of a session.
type Host struct {
	// Stdin feeds the program; nil gives it an empty stdin.
	Stdin  io.Reader
	Stdout io.Writer
	// Stderr receives the program's stderr (nothing in TTY mode, where the
	// terminal merges it into Stdout).
	Stderr io.Writer
	// TTY asks for the program to run on a terminal of Size.
	TTY  bool
	Size WinSize
	// Signals are forwarded to the program; Resizes to its terminal.
	Signals <-chan syscall.Signal
	Resizes <-chan WinSize
	// Request, for a sandbox running a service, says what to do instead
	// of running the configured program.
	Request *Request
	// Started, when set, is called once the guest has announced itself
	// and been answered.
	Started func()
	// Handover, when set, hands the program's stdio to the guest as
	// descriptors (see stdio.go); Stdin, Stdout and Stderr are then not
	// used.
	Handover *Handover
	// Files, when set, is sent right after the hello: the run's files as
	// a tar stream (see files.go), for a guest that shares no filesystem
	// with the host.
	Files io.Reader
	// DialPorts, when set, connects to the data ports, which carry the
	// program's stdio raw beside the channel (see data.go); Stdin, Stdout
	// and Stderr are copied through them. It is called when the guest has
	// opened its ends.
	DialPorts func() (*HostPorts, error)
}

// Run speaks the protocol on conn until the program ends and reports how it
// ended. An error of type *Failed means the program never ran.
func (h *Host) Run(conn io.ReadWriter) (Status, error) {
	w := NewWriter(conn)
	r := NewReader(conn)
	if err := h.greet(r, w); err != nil {
		return Status{}, err
	}
	if h.Handover != nil {
		// Beside the frames: a guest that fails before it takes the
		// descriptors reports so in a frame.
		defer h.Handover.Listener.Close()
		go h.Handover.send()
	}
	if h.Started != nil {
		h.Started()
	}
	s := &hostSession{h: h, w: w, done: make(chan struct{}), win: newWindow(StdinWindow), ports: &hostPorts{dial: h.DialPorts}}
	defer close(s.done)
	defer s.win.close()
	defer s.ports.close()
	go h.forward(w, s.done)
	s.stdout = &output{w: h.Stdout, channel: w}
	s.stderr = &output{w: h.Stderr, channel: w}
	if h.DialPorts == nil {
		go h.pumpStdin(w, s.win)
	}
	for {
		t, p, err := r.Next()
		if err != nil {
			if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
				return Status{}, ErrEnded
			}
			return Status{}, fmt.Errorf("console: %w", err)
		}
		if st, end, err := s.handle(t, p); end || err != nil {
			return st, err
		}
	}
}

// greet waits for the guest's announce and answers with the hello and,
// for a guest that shares no filesystem with the host, the run's files.
func (h *Host) greet(r *Reader, w *Writer) error {
	if err := awaitAnnounce(r); err != nil {
		return err
	}
	hi := hello{Version: Version, TTY: h.TTY, Size: h.Size, Request: h.Request, Files: h.Files != nil, DataPorts: h.DialPorts != nil}
	if h.Handover != nil {
		hi.StdioSocket = h.Handover.Name
	}
	if err := w.Write(Hello, hi.encode()); err != nil {
		return fmt.Errorf("console: sending hello: %w", err)
	}
	if h.Files != nil {
		return sendFiles(w, h.Files)
	}
	return nil
}

// hostSession is the host's side of a session once the guest is greeted.
type hostSession struct {
	h              *Host
	w              *Writer
	done           chan struct{}
	win            *window
	ports          *hostPorts
	stdout, stderr *output
}

// handle acts on one frame from the guest; end tells that the session is
// over, with the program's status or the guest's failure.
func (s *hostSession) handle(t Type, p []byte) (st Status, end bool, err error) {
	switch t {
	case Stdout:
		s.stdout.write(p)
	case Stderr:
		s.stderr.write(p)
	case Announce:
		// Repeated while our hello was on its way.
	case PortsOpen, StdinReady:
		if s.h.DialPorts == nil {
			return Status{}, true, fmt.Errorf("%w: unexpected %s from the sandbox", ErrFrame, t)
		}
		return Status{}, false, s.ports.control(t, s.h.Stdin, s.stdout, s.stderr, s.done)
	case StdinAck:
		n, err := getU32(t, p)
		if err != nil {
			return Status{}, true, err
		}
		s.win.give(int(n))
	case Exit:
		st, n, err := decodeExit(p, s.h.DialPorts != nil)
		if err != nil {
			return Status{}, true, err
		}
		if s.h.DialPorts != nil {
			if err := s.ports.await(n); err != nil {
				return Status{}, true, err
			}
		}
		return st, true, s.w.Write(ExitAck, nil)
	case Failure:
		f, err := decodeFailed(p)
		if err != nil {
			return Status{}, true, err
		}
		s.w.Write(ExitAck, nil)
		return Status{}, true, f
	default:
		return Status{}, true, fmt.Errorf("%w: unexpected %s from the sandbox", ErrFrame, t)
	}
	return Status{}, false, nil
}

// announceHeader starts every Announce frame.
var announceHeader = []byte{byte(Announce), 0, 0, 0, 4}

// awaitAnnounce skips whatever precedes the guest's first announce (a pty
// console's leftovers) and checks the guest's version.
func awaitAnnounce(r *Reader) error {
	for matched := 0; matched < len(announceHeader); {
		c, err := r.r.ReadByte()
		if err != nil {
			if err == io.EOF {
				return ErrEnded
			}
			return fmt.Errorf("console: waiting for the sandbox init: %w", err)
		}
		switch {
		case c == announceHeader[matched]:
			matched++
		case c == announceHeader[0]:
			matched = 1
		default:
			matched = 0
		}
	}
	var v [4]byte
	if _, err := io.ReadFull(r.r, v[:]); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return ErrEnded
		}
		return fmt.Errorf("console: waiting for the sandbox init: %w", err)
	}
	if got := binary.BigEndian.Uint32(v[:]); got != Version {
		return fmt.Errorf("%w: the sandbox init speaks version %d, this launcher version %d (install both from one build)", ErrVersion, got, Version)
	}
	return nil
}

func (h *Host) pumpStdin(w *Writer, win *window) {
	if h.Stdin != nil {
		buf := make([]byte, 32<<10)
		for {
			n, err := h.Stdin.Read(buf)
			for p := buf[:n]; len(p) > 0; {
				k := win.take(len(p))
				if k == 0 {
					return
				}
				if w.Write(Stdin, p[:k]) != nil {
					return
				}
				p = p[k:]
			}
			if err != nil {
				break
			}
		}
	}
	w.Write(StdinEOF, nil)
}

func (h *Host) forward(w *Writer, done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		case sig := <-h.Signals:
			w.Write(Signal, putU32(uint32(sig)))
		case ws := <-h.Resizes:
			w.Write(Winsize, ws.encode())
		}
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// window counts the stdin bytes the guest is ready to take.
type window struct {
	mu     sync.Mutex
	cond   *sync.Cond
	avail  int
	closed bool
}

func newWindow(n int) *window {
	w := &window{avail: n}
	w.cond = sync.NewCond(&w.mu)
	return w
}

// take waits for credit and claims up to n bytes of it; 0 means closed.
func (w *window) take(n int) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.avail == 0 && !w.closed {
		w.cond.Wait()
	}
	if w.closed {
		return 0
	}
	n = min(n, w.avail, MaxPayload)
	w.avail -= n
	return n
}

func (w *window) give(n int) {
	w.mu.Lock()
	w.avail += n
	w.mu.Unlock()
	w.cond.Signal()
}

func (w *window) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.cond.Broadcast()
}

// output is where the program's stdout or stderr goes. When the caller's
// end breaks (the reader of a pipe is gone), the program gets SIGPIPE, as
// it would writing to that pipe itself, and what it still writes is
// dropped.
type output struct {
	w       io.Writer
	channel *Writer
	broken  bool
}

func (o *output) write(p []byte) {
	if o.broken {
		return
	}
	if _, err := o.w.Write(p); err != nil {
		o.broken = true
		o.channel.Write(Signal, putU32(uint32(syscall.SIGPIPE)))
	}
}
