package console

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"
)

// Guest is the sandbox init's end of a session.
type Guest struct {
	r     *Reader
	w     *Writer
	hello hello
}

// Accept announces the guest until the host answers with its hello. The
// init calls it before starting the program, so the program starts with the
// host's terminal settings. The announce is repeated, with back-off, because
// what is written before the host opens the channel may be lost.
func Accept(conn io.ReadWriter) (*Guest, error) {
	g := &Guest{r: NewReader(conn), w: NewWriter(conn)}
	heard := make(chan struct{})
	defer close(heard)
	go func() {
		for wait := 10 * time.Millisecond; ; wait = min(2*wait, time.Second) {
			if g.w.Write(Announce, putU32(Version)) != nil {
				return
			}
			select {
			case <-heard:
				return
			case <-time.After(wait):
			}
		}
	}()
	for {
		t, p, err := g.r.Next()
		if err == io.EOF {
			// A virtio port reads end of file while no host has it
			// open: the host is yet to come.
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("console: waiting for the host's hello: %w", err)
		}
		if t != Hello {
			// Leftovers of an earlier session on a reused channel.
			continue
		}
		h, err := decodeHello(p)
		if err != nil {
			return nil, err
		}
		if h.Version != Version {
			return nil, fmt.Errorf("%w: the launcher speaks version %d, this init version %d", ErrVersion, h.Version, Version)
		}
		g.hello = h
		return g, nil
	}
}

// TTY reports whether the host asked for a terminal, and its size.
func (g *Guest) TTY() (bool, WinSize) { return g.hello.TTY, g.hello.Size }

// Request is what the host asked for, or nil: run the configured program.
func (g *Guest) Request() *Request { return g.hello.Request }

// Files is the run's files, a tar stream, when the host sends them (see
// files.go), or nil. It must be read to its end before Serve or Fail.
func (g *Guest) Files() io.Reader {
	if !g.hello.Files {
		return nil
	}
	return &filesReader{r: g.r}
}

// DataPorts tells whether the program's stdio goes through the data ports
// (see data.go); the init then opens them, hands them to OpenPorts before
// it starts the program, and to Serve.
func (g *Guest) DataPorts() bool { return g.hello.DataPorts }

// StdioSocket names the socket in the config share where the host hands
// over the program's stdio, or is empty: stdio goes in frames.
func (g *Guest) StdioSocket() string { return g.hello.StdioSocket }

// Fail reports that the program could not be run and waits for the host to
// take note, so the report is not lost when the sandbox ends.
func (g *Guest) Fail(f *Failed) error {
	if err := g.w.Write(Failure, f.encode()); err != nil {
		return err
	}
	return g.awaitAck()
}

// AwaitHangup waits, at most d, for the host to close the channel once
// the program's end was acknowledged. The init of a machine ends it after
// this: libvirt 9.0 may deadlock when a QEMU machine ends while a client's
// console stream to it is being closed (virChrdevFree against
// virStreamAbort), so the launcher closes its streams first, and the
// machine ends after.
func (g *Guest) AwaitHangup(d time.Duration) {
	hungUp := make(chan struct{})
	go func() {
		defer close(hungUp)
		for {
			if _, _, err := g.r.Next(); err != nil {
				return
			}
		}
	}()
	select {
	case <-hungUp:
	case <-time.After(d):
	}
}

func (g *Guest) awaitAck() error {
	for {
		t, _, err := g.r.Next()
		if err != nil {
			return err
		}
		if t == ExitAck {
			return nil
		}
	}
}

// Program is the running program as Serve sees it.
type Program struct {
	// Stdin is closed when the host's stdin ends.
	Stdin  io.WriteCloser
	Stdout io.Reader
	// Stderr is nil on a terminal.
	Stderr io.Reader
	Signal func(syscall.Signal)
	// HostGone, when set, is called when the host closes the channel
	// before it acknowledged the exit: nobody reads the program's output
	// or its status any more, and writes to a virtio port block while no
	// host has it open.
	HostGone func()
	Resize   func(WinSize)
	// Wait returns once the program has ended and every other process that
	// could hold its output open is gone.
	Wait func() Status
	// Ports, when the host asked for data ports, carry Stdout and Stderr
	// instead of frames; the program reads Ports.Stdin itself, and Stdin
	// is nil.
	Ports *GuestPorts
}

// Serve relays the program's stdio until it ends, reports its status and
// waits for the host's acknowledgement.
func (g *Guest) Serve(p Program) error {
	stdin := newStdinQueue()
	acked := make(chan error, 1)
	go func() {
		err := g.demux(p, stdin)
		if errors.Is(err, io.EOF) && p.HostGone != nil {
			p.HostGone()
		}
		acked <- err
	}()
	go g.feedStdin(p.Stdin, stdin)

	outs := []struct {
		r    io.Reader
		t    Type
		port *os.File
		sent *uint64
	}{{r: p.Stdout, t: Stdout}, {r: p.Stderr, t: Stderr}}
	var sent *counts
	if p.Ports != nil {
		sent = &counts{}
		outs[0].port, outs[0].sent = p.Ports.Stdout, &sent.stdout
		outs[1].port, outs[1].sent = p.Ports.Stderr, &sent.stderr
	}
	var pumps sync.WaitGroup
	for _, out := range outs {
		if out.r == nil {
			continue
		}
		pumps.Add(1)
		go func() {
			defer pumps.Done()
			if out.port != nil {
				*out.sent = spliceOut(out.r, out.port)
				return
			}
			g.pump(out.t, out.r)
		}()
	}
	st := p.Wait()
	pumps.Wait()
	if err := g.w.Write(Exit, encodeExit(st, sent)); err != nil {
		return err
	}
	return <-acked
}

// demux handles the host's frames until the exit is acknowledged.
func (g *Guest) demux(p Program, stdin *stdinQueue) error {
	open := true
	defer func() {
		if open {
			stdin.close()
		}
	}()
	for {
		t, b, err := g.r.Next()
		if err != nil {
			return fmt.Errorf("console: %w", err)
		}
		switch t {
		case Stdin:
			if open {
				stdin.put(b)
			}
		case StdinEOF:
			if open {
				stdin.close()
				open = false
			}
		case Signal:
			if sig, err := getU32(t, b); err == nil && p.Signal != nil {
				p.Signal(syscall.Signal(sig))
			}
		case Winsize:
			if ws, err := decodeWinSize(t, b); err == nil && p.Resize != nil {
				p.Resize(ws)
			}
		case ExitAck:
			return nil
		}
	}
}

// feedStdin writes the host's stdin to the program and returns credit for
// every byte, also those dropped once the program stopped reading, so the
// host never waits on a program that is gone.
func (g *Guest) feedStdin(w io.WriteCloser, in *stdinQueue) {
	var broken error
	if w == nil {
		// The program's stdin was handed over: nothing comes here.
		broken = io.ErrClosedPipe
	}
	for b := in.get(); b != nil; b = in.get() {
		if broken == nil {
			_, broken = w.Write(b)
		}
		g.w.Write(StdinAck, putU32(uint32(len(b))))
	}
	if w != nil {
		w.Close()
	}
}

func (g *Guest) pump(t Type, r io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 && g.w.Write(t, buf[:n]) != nil {
			return
		}
		if err != nil {
			// A terminal's master reads EIO once the last process holding
			// the slave is gone: that is its end of file.
			if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.EIO) {
				g.w.WriteData(Stderr, []byte(fmt.Sprintf("sandbox: reading the program's %s: %v\n", t, err)))
			}
			return
		}
	}
}

// stdinQueue holds the host's stdin until the program takes it. It is bounded
// in bytes, by the host's window, and not in frames: stdin that comes a few
// bytes a frame (a terminal, a slow producer) must not fill it while the
// window is open, or demux would stop reading the channel, and with it the
// signals, while the program ignores its stdin.
type stdinQueue struct {
	mu   sync.Mutex
	cond *sync.Cond
	buf  []byte
	eof  bool
}

func newStdinQueue() *stdinQueue {
	q := &stdinQueue{}
	q.cond = sync.NewCond(&q.mu)
	return q
}

func (q *stdinQueue) put(b []byte) {
	q.mu.Lock()
	q.buf = append(q.buf, b...)
	q.mu.Unlock()
	q.cond.Signal()
}

func (q *stdinQueue) close() {
	q.mu.Lock()
	q.eof = true
	q.mu.Unlock()
	q.cond.Signal()
}

// get waits for stdin and takes all there is; nil means its end.
func (q *stdinQueue) get() []byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.buf) == 0 && !q.eof {
		q.cond.Wait()
	}
	b := q.buf
	q.buf = nil
	return b
}
