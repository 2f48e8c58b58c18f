package console

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/iotest"
	"time"
)

// timeout bounds every step of a test that could hang on a deadlock.
const timeout = 10 * time.Second

// within returns f's result, failing the test (with every goroutine's stack,
// to show the deadlock) if f has not returned within timeout.
func within[T any](t *testing.T, what string, f func() T) T {
	t.Helper()
	c := make(chan T, 1)
	go func() { c <- f() }()
	select {
	case v := <-c:
		return v
	case <-time.After(timeout):
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Fatalf("%s did not return within %v; goroutines:\n%s", what, timeout, buf)
		var zero T
		return zero
	}
}

// pipeConn is one end of a channel made of two io.Pipes.
type pipeConn struct {
	*io.PipeReader
	*io.PipeWriter
}

func (c pipeConn) Close() error {
	c.PipeWriter.Close()
	return c.PipeReader.Close()
}

// The transports the sessions are run on. The pipes are unbuffered, so a
// frame nobody reads blocks its writer, the harshest a real channel can be;
// the socket pair is buffered, as a real channel is, so that the guest's
// repeated announces pile up while the host is busy.
var transports = []struct {
	name string
	new  func() (host, guest io.ReadWriteCloser)
}{
	{"net.Pipe", func() (io.ReadWriteCloser, io.ReadWriteCloser) { return net.Pipe() }},
	{"io.Pipe", func() (io.ReadWriteCloser, io.ReadWriteCloser) {
		toGuest, fromHost := io.Pipe()
		toHost, fromGuest := io.Pipe()
		return pipeConn{toHost, fromHost}, pipeConn{toGuest, fromGuest}
	}},
	{"socketpair", socketPair},
}

// socketPair returns the two ends of a Unix stream socket pair.
func socketPair() (io.ReadWriteCloser, io.ReadWriteCloser) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		panic(err)
	}
	conn := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			panic(err)
		}
		return c
	}
	return conn(fds[0]), conn(fds[1])
}

// connPair returns the two ends of a channel, closed when the test ends so
// that no goroutine stays blocked on them.
func connPair(t *testing.T) (host, guest io.ReadWriteCloser) {
	t.Helper()
	host, guest = net.Pipe()
	t.Cleanup(func() {
		host.Close()
		guest.Close()
	})
	return host, guest
}

// proc is the simulated program's side of its stdio.
type proc struct {
	stdin   io.Reader
	stdout  io.Writer
	stderr  io.Writer // nil on a terminal
	signals chan syscall.Signal
	resizes chan WinSize
}

// start runs body as the program, on pipes as a process would be, and returns
// it as Serve sees it. When body returns, the program's ends of its pipes are
// closed, as a process's descriptors are when it exits.
func start(tty bool, body func(*proc) Status) Program {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	pr := &proc{stdin: inR, stdout: outW, signals: make(chan syscall.Signal, 16), resizes: make(chan WinSize, 16)}
	p := Program{
		Stdin:  inW,
		Stdout: outR,
		Signal: func(sig syscall.Signal) { pr.signals <- sig },
		Resize: func(ws WinSize) { pr.resizes <- ws },
	}
	var errW *io.PipeWriter
	if !tty {
		var errR *io.PipeReader
		errR, errW = io.Pipe()
		pr.stderr, p.Stderr = errW, errR
	}
	done := make(chan Status, 1)
	go func() {
		st := body(pr)
		inR.Close()
		outW.Close()
		if errW != nil {
			errW.Close()
		}
		done <- st
	}()
	p.Wait = func() Status { return <-done }
	return p
}

// cat copies its stdin to its stdout until end of file.
func cat(p *proc) Status {
	if _, err := io.Copy(p.stdout, p.stdin); err != nil {
		return Status{Code: 1}
	}
	return Status{}
}

// guestResult is what the guest end of a session saw.
type guestResult struct {
	tty  bool
	size WinSize
	err  error // from Accept or Serve
}

type hostResult struct {
	st  Status
	err error
}

// session runs h against a guest whose program is body, on net.Pipe.
func session(t *testing.T, h *Host, body func(*proc) Status) (Status, error, guestResult) {
	t.Helper()
	hc, gc := connPair(t)
	return sessionOn(t, hc, gc, h, body)
}

// sessionOn runs h on hc against a guest on gc whose program is body, and
// returns what both ends reported.
func sessionOn(t *testing.T, hc, gc io.ReadWriter, h *Host, body func(*proc) Status) (Status, error, guestResult) {
	t.Helper()
	gres := make(chan guestResult, 1)
	go func() {
		g, err := Accept(gc)
		if err != nil {
			gres <- guestResult{err: err}
			return
		}
		tty, size := g.TTY()
		err = g.Serve(start(tty, body))
		gres <- guestResult{tty, size, err}
	}()
	hr := within(t, "Host.Run", func() hostResult {
		st, err := h.Run(hc)
		return hostResult{st, err}
	})
	gr := within(t, "Accept+Guest.Serve", func() guestResult { return <-gres })
	return hr.st, hr.err, gr
}

// fakeGuest runs script as the guest end of hc's channel, then reads and
// drops the host's frames until the channel ends.
func fakeGuest(t *testing.T, script func(r *Reader, w *Writer, c io.ReadWriteCloser)) (host io.ReadWriter) {
	t.Helper()
	hc, gc := connPair(t)
	go func() {
		r := NewReader(gc)
		script(r, NewWriter(gc), gc)
		for {
			if _, _, err := r.Next(); err != nil {
				return
			}
		}
	}()
	return hc
}

// readHello reads the host's hello, which must be its first frame.
func readHello(t *testing.T, r *Reader) {
	if typ, _, err := r.Next(); err != nil || typ != Hello {
		t.Errorf("host's first frame: Next() = %v, %v, want %v, nil", typ, err, Hello)
	}
}

// announce is the fake guests' handshake: the guest speaks first, the host
// answers with its hello.
func announce(t *testing.T, r *Reader, w *Writer) {
	w.Write(Announce, putU32(Version))
	readHello(t, r)
}

// announceFrame is the frame a guest of this version announces itself with.
var announceFrame = frames(Announce, putU32(Version))

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	var s [32]byte
	binary.BigEndian.PutUint64(s[:], seed)
	rand.NewChaCha8(s).Read(b)
	return b
}

// digest is an io.Writer that remembers only a hash and a length, so tests
// can compare large outputs without keeping them.
type digest struct {
	h hash.Hash
	n int
}

func newDigest() *digest { return &digest{h: sha256.New()} }

func (d *digest) Write(p []byte) (int, error) {
	d.n += len(p)
	return d.h.Write(p)
}

func (d *digest) String() string { return fmt.Sprintf("%d bytes, sha256 %x", d.n, d.h.Sum(nil)) }

func digestOf(b []byte) string {
	d := newDigest()
	d.Write(b)
	return d.String()
}

func TestStdinEOF(t *testing.T) {
	for _, tr := range transports {
		for _, tt := range []struct {
			name  string
			stdin func() io.Reader
			want  string
		}{
			{"bytes", func() io.Reader { return bytes.NewReader([]byte("hello\nworld\n")) }, "hello\nworld\n"},
			{"empty", func() io.Reader { return bytes.NewReader(nil) }, ""},
			{"nil", func() io.Reader { return nil }, ""},
			{"one byte per read", func() io.Reader { return iotest.OneByteReader(strings.NewReader("slowly\n")) }, "slowly\n"},
			{"data with error", func() io.Reader {
				return iotest.DataErrReader(strings.NewReader("last read has data and EOF"))
			}, "last read has data and EOF"},
		} {
			t.Run(tr.name+"/"+tt.name, func(t *testing.T) {
				hc, gc := tr.new()
				t.Cleanup(func() {
					hc.Close()
					gc.Close()
				})
				var stdout, stderr bytes.Buffer
				h := &Host{Stdin: tt.stdin(), Stdout: &stdout, Stderr: &stderr}
				st, err, g := sessionOn(t, hc, gc, h, cat)
				if err != nil || st != (Status{}) {
					t.Errorf("Run() = %+v, %v, want %+v, nil", st, err, Status{})
				}
				if g.err != nil {
					t.Errorf("Serve() = %v, want nil", g.err)
				}
				if got := stdout.String(); got != tt.want {
					t.Errorf("Run(): stdout = %q, want %q", got, tt.want)
				}
				if stderr.Len() != 0 {
					t.Errorf("Run(): stderr = %q, want empty", stderr.String())
				}
			})
		}
	}
}

func TestLargeStdin(t *testing.T) {
	in := randomBytes(20<<20, 1)
	stdout := newDigest()
	h := &Host{Stdin: bytes.NewReader(in), Stdout: stdout, Stderr: io.Discard}
	st, err, g := session(t, h, cat)
	if err != nil || st != (Status{}) || g.err != nil {
		t.Errorf("Run() = %+v, %v (guest: %v), want %+v, nil (guest: nil)", st, err, g.err, Status{})
	}
	if got, want := stdout.String(), digestOf(in); got != want {
		t.Errorf("Run(): stdout = %s, want %s", got, want)
	}
}

func TestLargeOutputs(t *testing.T) {
	out, errOut := randomBytes(10<<20, 2), randomBytes(10<<20, 3)
	body := func(p *proc) Status {
		var wg sync.WaitGroup
		for _, s := range []struct {
			w io.Writer
			b []byte
		}{{p.stdout, out}, {p.stderr, errOut}} {
			wg.Go(func() {
				// Uneven writes, so that the frames of the two streams interleave
				// on the channel at odd boundaries.
				for b := s.b; len(b) > 0; {
					n := min(len(b), 1+len(b)%50000)
					s.w.Write(b[:n])
					b = b[n:]
				}
			})
		}
		wg.Wait()
		return Status{}
	}
	stdout, stderr := newDigest(), newDigest()
	h := &Host{Stdout: stdout, Stderr: stderr}
	st, err, g := session(t, h, body)
	if err != nil || st != (Status{}) || g.err != nil {
		t.Errorf("Run() = %+v, %v (guest: %v), want %+v, nil (guest: nil)", st, err, g.err, Status{})
	}
	if got, want := stdout.String(), digestOf(out); got != want {
		t.Errorf("Run(): stdout = %s, want %s", got, want)
	}
	if got, want := stderr.String(), digestOf(errOut); got != want {
		t.Errorf("Run(): stderr = %s, want %s", got, want)
	}
}

func TestInterleavedOutput(t *testing.T) {
	for _, tt := range []struct {
		name string
		n    int
		line func(stream string, i int) string
	}{
		{"short lines", 2000, func(s string, i int) string { return fmt.Sprintf("%s %d\n", s, i) }},
		{"growing lines", 300, func(s string, i int) string { return fmt.Sprintf("%s %d %s\n", s, i, strings.Repeat("x", i*97)) }},
		{"no newlines", 1000, func(s string, i int) string { return fmt.Sprintf("%s%d,", s[:1], i) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var wantOut, wantErr strings.Builder
			for i := range tt.n {
				wantOut.WriteString(tt.line("out", i))
				wantErr.WriteString(tt.line("err", i))
			}
			body := func(p *proc) Status {
				for i := range tt.n {
					io.WriteString(p.stdout, tt.line("out", i))
					io.WriteString(p.stderr, tt.line("err", i))
				}
				return Status{}
			}
			var stdout, stderr bytes.Buffer
			h := &Host{Stdout: &stdout, Stderr: &stderr}
			if st, err, g := session(t, h, body); err != nil || st != (Status{}) || g.err != nil {
				t.Errorf("Run() = %+v, %v (guest: %v), want %+v, nil (guest: nil)", st, err, g.err, Status{})
			}
			if got, want := stdout.String(), wantOut.String(); got != want {
				t.Errorf("Run(): stdout = %.200q..., want %.200q...", got, want)
			}
			if got, want := stderr.String(), wantErr.String(); got != want {
				t.Errorf("Run(): stderr = %.200q..., want %.200q...", got, want)
			}
		})
	}
}

func TestExitStatus(t *testing.T) {
	for _, tt := range []struct {
		name string
		st   Status
		code int
	}{
		{"success", Status{}, 0},
		{"code 7", Status{Code: 7}, 7},
		{"code 255", Status{Code: 255}, 255},
		{"negative code", Status{Code: -1}, -1},
		{"SIGTERM", Status{Signal: 15}, 143},
		{"SIGKILL", Status{Signal: 9}, 137},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var stdout bytes.Buffer
			h := &Host{Stdout: &stdout, Stderr: io.Discard}
			st, err, g := session(t, h, func(p *proc) Status {
				io.WriteString(p.stdout, "bye\n")
				return tt.st
			})
			if err != nil || st != tt.st {
				t.Errorf("Run() = %+v, %v, want %+v, nil", st, err, tt.st)
			}
			if got := st.ExitCode(); got != tt.code {
				t.Errorf("Status%+v.ExitCode() = %d, want %d", st, got, tt.code)
			}
			if g.err != nil {
				t.Errorf("Serve() = %v, want nil", g.err)
			}
			if got := stdout.String(); got != "bye\n" {
				t.Errorf("Run(): stdout = %q, want %q", got, "bye\n")
			}
		})
	}
}

// untilSignal is a program that ends by the first signal it gets.
func untilSignal(p *proc) Status {
	return Status{Signal: int(<-p.signals)}
}

func TestSignalForwarding(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1} {
		t.Run(sig.String(), func(t *testing.T) {
			sigs := make(chan syscall.Signal, 1)
			sigs <- sig
			h := &Host{Stdout: io.Discard, Stderr: io.Discard, Signals: sigs}
			st, err, g := session(t, h, untilSignal)
			if want := (Status{Signal: int(sig)}); err != nil || st != want {
				t.Errorf("Run() = %+v, %v, want %+v, nil", st, err, want)
			}
			if got, want := st.ExitCode(), 128+int(sig); got != want {
				t.Errorf("Status%+v.ExitCode() = %d, want %d", st, got, want)
			}
			if g.err != nil {
				t.Errorf("Serve() = %v, want nil", g.err)
			}
		})
	}
}

func TestTerminal(t *testing.T) {
	for _, tt := range []struct {
		name    string
		tty     bool
		size    WinSize
		resizes []WinSize
	}{
		{"pipes", false, WinSize{}, nil},
		{"terminal", true, WinSize{Rows: 24, Cols: 80}, nil},
		{"terminal resized", true, WinSize{Rows: 24, Cols: 80}, []WinSize{{Rows: 50, Cols: 132}}},
		{"terminal resized twice", true, WinSize{Rows: 1, Cols: 2}, []WinSize{{Rows: 3, Cols: 4}, {Rows: 65535, Cols: 65535}}},
		{"no size", true, WinSize{}, []WinSize{{Rows: 10, Cols: 10}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resizes := make(chan WinSize, len(tt.resizes))
			for _, ws := range tt.resizes {
				resizes <- ws
			}
			var stdout bytes.Buffer
			h := &Host{Stdout: &stdout, TTY: tt.tty, Size: tt.size, Resizes: resizes}
			if !tt.tty {
				h.Stderr = io.Discard
			}
			body := func(p *proc) Status {
				if (p.stderr == nil) != tt.tty {
					return Status{Code: 2}
				}
				for range tt.resizes {
					ws := <-p.resizes
					fmt.Fprintf(p.stdout, "%dx%d;", ws.Rows, ws.Cols)
				}
				return Status{}
			}
			st, err, g := session(t, h, body)
			if err != nil || st != (Status{}) || g.err != nil {
				t.Errorf("Run() = %+v, %v (guest: %v), want %+v, nil (guest: nil)", st, err, g.err, Status{})
			}
			if g.tty != tt.tty || g.size != tt.size {
				t.Errorf("Guest.TTY() = %v, %+v, want %v, %+v", g.tty, g.size, tt.tty, tt.size)
			}
			var want strings.Builder
			for _, ws := range tt.resizes {
				fmt.Fprintf(&want, "%dx%d;", ws.Rows, ws.Cols)
			}
			if got := stdout.String(); got != want.String() {
				t.Errorf("Program.Resize got %q, want %q", got, want.String())
			}
		})
	}
}

// tripReader calls trip once n bytes have been read from r.
type tripReader struct {
	r    io.Reader
	n    int
	trip func()
	once sync.Once
}

func (r *tripReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if r.n -= n; r.n <= 0 {
		r.once.Do(r.trip)
	}
	return n, err
}

// TestSignalWhileStdinIgnored checks that a program that never reads its
// stdin still gets its signals, however much stdin the host has for it and
// in whatever pieces it comes.
func TestSignalWhileStdinIgnored(t *testing.T) {
	for _, tt := range []struct {
		name   string
		stdin  io.Reader
		signal int // after this many stdin bytes have been read
	}{
		// More than the window: the host must stop sending and the guest
		// keep reading.
		{"5 MB", bytes.NewReader(randomBytes(5<<20, 4)), StdinWindow + 1},
		// Less than the window, in many small frames, as from a terminal or
		// a slow producer: the guest must buffer them by bytes, not frames.
		{"trickle", iotest.OneByteReader(bytes.NewReader(randomBytes(32<<10, 5))), 32 << 10},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sigs := make(chan syscall.Signal, 1)
			stdin := &tripReader{r: tt.stdin, n: tt.signal, trip: func() { sigs <- syscall.SIGTERM }}
			h := &Host{Stdin: stdin, Stdout: io.Discard, Stderr: io.Discard, Signals: sigs}
			st, err, g := session(t, h, untilSignal)
			if want := (Status{Signal: 15}); err != nil || st != want {
				t.Errorf("Run() = %+v, %v, want %+v, nil", st, err, want)
			}
			if g.err != nil {
				t.Errorf("Serve() = %v, want nil", g.err)
			}
		})
	}
}

// TestStdinAfterExit checks that a program that ends with stdin still coming
// ends the session: the rest of the stdin is dropped.
func TestStdinAfterExit(t *testing.T) {
	for _, tt := range []struct {
		name string
		body func(*proc) Status
	}{
		{"exits at once", func(*proc) Status { return Status{Code: 3} }},
		{"reads a little", func(p *proc) Status {
			io.ReadFull(p.stdin, make([]byte, 100))
			return Status{Code: 3}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := &Host{Stdin: bytes.NewReader(randomBytes(5<<20, 6)), Stdout: io.Discard, Stderr: io.Discard}
			st, err, g := session(t, h, tt.body)
			if want := (Status{Code: 3}); err != nil || st != want {
				t.Errorf("Run() = %+v, %v, want %+v, nil", st, err, want)
			}
			if g.err != nil {
				t.Errorf("Serve() = %v, want nil", g.err)
			}
		})
	}
}

func TestFailure(t *testing.T) {
	for _, tt := range []struct {
		name  string
		stdin io.Reader
		f     Failed
		want  Failed
	}{
		{"not found", nil, Failed{127, "x: not found"}, Failed{127, "x: not found"}},
		{"stdin pending", bytes.NewReader(randomBytes(3<<20, 7)), Failed{126, "x: cannot execute"}, Failed{126, "x: cannot execute"}},
		{"multi-line", nil, Failed{125, "sandbox init:\nmount: denied"}, Failed{125, "sandbox init: mount: denied"}},
		{"empty message", nil, Failed{125, ""}, Failed{125, ""}},
		{"long message", nil, Failed{125, strings.Repeat("y", 2*MaxPayload)}, Failed{125, strings.Repeat("y", MaxPayload-1)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hc, gc := connPair(t)
			gerr := make(chan error, 1)
			go func() {
				g, err := Accept(gc)
				if err == nil {
					err = g.Fail(&tt.f)
				}
				gerr <- err
			}()
			h := &Host{Stdin: tt.stdin, Stdout: io.Discard, Stderr: io.Discard}
			hr := within(t, "Host.Run", func() hostResult {
				st, err := h.Run(hc)
				return hostResult{st, err}
			})
			var f *Failed
			if !errors.As(hr.err, &f) {
				t.Fatalf("Run() = %+v, %v, want a *Failed", hr.st, hr.err)
			}
			if *f != tt.want {
				t.Errorf("Run() = %+v, want %+v", *f, tt.want)
			}
			if err := within(t, "Guest.Fail", func() error { return <-gerr }); err != nil {
				t.Errorf("Fail(%+v) = %v, want nil", tt.f, err)
			}
		})
	}
}

// fakeHost reads the guest's first frame on hc, which must announce this
// version, keeps reading (and sending the types it reads, once hc ends, to
// the returned channel), and sends out once the announce has been read.
func fakeHost(t *testing.T, hc io.ReadWriteCloser, out []byte, closeAfter bool) <-chan []Type {
	t.Helper()
	types := make(chan []Type, 1)
	go func() {
		r := NewReader(hc)
		var seen []Type
		defer func() { types <- seen }()
		typ, p, err := r.Next()
		if err != nil || typ != Announce || !bytes.Equal(p, putU32(Version)) {
			t.Errorf("guest's first frame: Next() = %v %x, %v, want %v %x, nil", typ, p, err, Announce, putU32(Version))
			hc.Close()
			return
		}
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			for {
				typ, _, err := r.Next()
				if err != nil {
					return
				}
				seen = append(seen, typ)
			}
		}()
		hc.Write(out)
		if closeAfter {
			hc.Close()
		}
		<-drained
	}()
	return types
}

func TestAcceptVersionMismatch(t *testing.T) {
	for _, tt := range []struct {
		name    string
		payload []byte
		version uint32
	}{
		{"version 99", hello{Version: 99, TTY: true, Size: WinSize{Rows: 24, Cols: 80}}.encode(), 99},
		{"version only", putU32(99), 99},
		{"longer hello", append(putU32(Version+1), make([]byte, 100)...), Version + 1},
		{"version 0", hello{}.encode(), 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hc, gc := connPair(t)
			types := fakeHost(t, hc, frames(Hello, tt.payload), false)
			type acceptResult struct {
				g   *Guest
				err error
			}
			ar := within(t, "Accept", func() acceptResult {
				g, err := Accept(gc)
				return acceptResult{g, err}
			})
			if ar.g != nil || !errors.Is(ar.err, ErrVersion) {
				t.Fatalf("Accept() = %v, %v, want nil, %v", ar.g, ar.err, ErrVersion)
			}
			for _, v := range []string{fmt.Sprintf("version %d", tt.version), fmt.Sprintf("version %d", Version)} {
				if !strings.Contains(ar.err.Error(), v) {
					t.Errorf("Accept() = %q, want it to name %q", ar.err, v)
				}
			}
			// The init no longer answers: the launcher learnt its version
			// from the announce (checked by fakeHost), and at most a repeat
			// of it may follow.
			gc.Close()
			for _, typ := range within(t, "the fake host", func() []Type { return <-types }) {
				if typ != Announce {
					t.Errorf("Accept() sent %v after refusing the hello, want only %v", typ, Announce)
				}
			}
		})
	}
}

func TestRunVersionMismatch(t *testing.T) {
	for _, tt := range []struct {
		name    string
		garbage []byte
		version uint32
	}{
		{"99", nil, 99},
		{"0", nil, 0},
		{"next", nil, Version + 1},
		{"99 after noise", []byte("^A^@^@\x02\x00\x00"), 99},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hc, gc := connPair(t)
			sent := make(chan []frame, 1)
			go func() {
				gc.Write(append(bytes.Clone(tt.garbage), frames(Announce, putU32(tt.version))...))
				fs, _ := readAll(NewReader(gc))
				sent <- fs
			}()
			h := &Host{Stdin: strings.NewReader("never sent"), Stdout: io.Discard, Stderr: io.Discard}
			hr := within(t, "Host.Run", func() hostResult {
				st, err := h.Run(hc)
				return hostResult{st, err}
			})
			if !errors.Is(hr.err, ErrVersion) {
				t.Fatalf("Run() = %+v, %v, want %v", hr.st, hr.err, ErrVersion)
			}
			for _, want := range []string{fmt.Sprintf("version %d", tt.version), fmt.Sprintf("version %d", Version)} {
				if !strings.Contains(hr.err.Error(), want) {
					t.Errorf("Run() = %q, want it to name %q", hr.err, want)
				}
			}
			// The host refuses before saying anything: no hello, no stdin.
			hc.Close()
			if fs := within(t, "the fake guest", func() []frame { return <-sent }); len(fs) != 0 {
				t.Errorf("Run() sent %d frames (first %v) to a guest of version %d, want none", len(fs), fs[0].t, tt.version)
			}
		})
	}
}

func TestEnded(t *testing.T) {
	for _, tt := range []struct {
		name   string
		script func(*testing.T, *Reader, *Writer, io.ReadWriteCloser)
		stdout string
	}{
		{"before announce", func(t *testing.T, r *Reader, w *Writer, c io.ReadWriteCloser) {
			c.Close()
		}, ""},
		{"after noise", func(t *testing.T, r *Reader, w *Writer, c io.ReadWriteCloser) {
			c.Write([]byte("^A^@^@ login: "))
			c.Close()
		}, ""},
		{"inside an announce header", func(t *testing.T, r *Reader, w *Writer, c io.ReadWriteCloser) {
			c.Write([]byte{byte(Announce), 0, 0})
			c.Close()
		}, ""},
		{"inside an announce", func(t *testing.T, r *Reader, w *Writer, c io.ReadWriteCloser) {
			c.Write([]byte{byte(Announce), 0, 0, 0, 4, 0})
			c.Close()
		}, ""},
		{"after hello", func(t *testing.T, r *Reader, w *Writer, c io.ReadWriteCloser) {
			announce(t, r, w)
			c.Close()
		}, ""},
		{"after repeated announces", func(t *testing.T, r *Reader, w *Writer, c io.ReadWriteCloser) {
			announce(t, r, w)
			w.Write(Announce, putU32(Version))
			w.Write(Announce, putU32(Version))
			c.Close()
		}, ""},
		{"after accept", func(t *testing.T, _ *Reader, _ *Writer, c io.ReadWriteCloser) {
			if _, err := Accept(c); err != nil {
				t.Errorf("Accept() = %v, want nil", err)
			}
			c.Close()
		}, ""},
		{"after output", func(t *testing.T, r *Reader, w *Writer, c io.ReadWriteCloser) {
			announce(t, r, w)
			w.Write(Stdout, []byte("partial"))
			c.Close()
		}, "partial"},
		{"inside a header", func(t *testing.T, r *Reader, w *Writer, c io.ReadWriteCloser) {
			announce(t, r, w)
			c.Write([]byte{byte(Exit), 0, 0})
			c.Close()
		}, ""},
		{"inside a payload", func(t *testing.T, r *Reader, w *Writer, c io.ReadWriteCloser) {
			announce(t, r, w)
			c.Write([]byte{byte(Stdout), 0, 0, 0, 10, 'a', 'b', 'c'})
			c.Close()
		}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hc := fakeGuest(t, func(r *Reader, w *Writer, c io.ReadWriteCloser) { tt.script(t, r, w, c) })
			var stdout bytes.Buffer
			h := &Host{Stdin: bytes.NewReader(randomBytes(100<<10, 8)), Stdout: &stdout, Stderr: io.Discard}
			hr := within(t, "Host.Run", func() hostResult {
				st, err := h.Run(hc)
				return hostResult{st, err}
			})
			if hr.err != ErrEnded {
				t.Errorf("Run() = %+v, %v, want %v", hr.st, hr.err, ErrEnded)
			}
			if got := stdout.String(); got != tt.stdout {
				t.Errorf("Run(): stdout = %q, want %q", got, tt.stdout)
			}
		})
	}
}

func TestRunMalformed(t *testing.T) {
	for _, tt := range []struct {
		name   string
		script func(*testing.T, *Reader, *Writer, io.ReadWriteCloser)
	}{
		// Only what precedes the first announce is skipped: noise after
		// it is a broken channel.
		{"noise after hello", func(t *testing.T, r *Reader, w *Writer, c io.ReadWriteCloser) {
			announce(t, r, w)
			c.Write([]byte("^A^@^@"))
		}},
		{"unknown frame after a repeated announce", func(t *testing.T, r *Reader, w *Writer, _ io.ReadWriteCloser) {
			announce(t, r, w)
			w.Write(Announce, putU32(Version))
			w.Write(Type(200), nil)
		}},
		{"unexpected frame", func(t *testing.T, r *Reader, w *Writer, _ io.ReadWriteCloser) {
			announce(t, r, w)
			w.Write(Hello, hello{Version: Version}.encode())
		}},
		{"unknown frame", func(t *testing.T, r *Reader, w *Writer, _ io.ReadWriteCloser) {
			announce(t, r, w)
			w.Write(Type(200), nil)
		}},
		{"short stdin ack", func(t *testing.T, r *Reader, w *Writer, _ io.ReadWriteCloser) {
			announce(t, r, w)
			w.Write(StdinAck, []byte{1})
		}},
		{"short exit", func(t *testing.T, r *Reader, w *Writer, _ io.ReadWriteCloser) {
			announce(t, r, w)
			w.Write(Exit, putU32(0))
		}},
		{"empty failure", func(t *testing.T, r *Reader, w *Writer, _ io.ReadWriteCloser) {
			announce(t, r, w)
			w.Write(Failure, nil)
		}},
		{"oversized frame", func(t *testing.T, r *Reader, w *Writer, c io.ReadWriteCloser) {
			announce(t, r, w)
			c.Write(append([]byte{byte(Stdout)}, putU32(MaxPayload+1)...))
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hc := fakeGuest(t, func(r *Reader, w *Writer, c io.ReadWriteCloser) { tt.script(t, r, w, c) })
			h := &Host{Stdout: io.Discard, Stderr: io.Discard}
			hr := within(t, "Host.Run", func() hostResult {
				st, err := h.Run(hc)
				return hostResult{st, err}
			})
			if !errors.Is(hr.err, ErrFrame) {
				t.Errorf("Run() = %+v, %v, want %v", hr.st, hr.err, ErrFrame)
			}
		})
	}
}

// TestFailureFirst checks a failure reported as the guest's first frame
// after the handshake, with nothing else before.
func TestFailureFirst(t *testing.T) {
	hc := fakeGuest(t, func(r *Reader, w *Writer, _ io.ReadWriteCloser) {
		announce(t, r, w)
		w.Write(Failure, (&Failed{125, "too early"}).encode())
	})
	h := &Host{Stdout: io.Discard, Stderr: io.Discard}
	hr := within(t, "Host.Run", func() hostResult {
		st, err := h.Run(hc)
		return hostResult{st, err}
	})
	var f *Failed
	if !errors.As(hr.err, &f) || *f != (Failed{125, "too early"}) {
		t.Errorf("Run() = %+v, %v, want %+v", hr.st, hr.err, Failed{125, "too early"})
	}
}

func TestAccept(t *testing.T) {
	type acceptResult struct {
		g   *Guest
		err error
	}
	for _, tt := range []struct {
		name    string
		frames  []byte // what the fake host sends once announced to, before closing
		wantErr error
		tty     bool
		size    WinSize
	}{
		{"hello", frames(Hello, hello{Version: Version, TTY: true, Size: WinSize{Rows: 5, Cols: 6}}.encode()), nil, true, WinSize{Rows: 5, Cols: 6}},
		{"leftovers first", append(frames(Stdin, []byte("old"), StdinEOF, nil, ExitAck, nil, Signal, putU32(9)),
			frames(Hello, hello{Version: Version}.encode())...), nil, false, WinSize{}},
		{"short hello", frames(Hello, []byte{0, 0, 1}), ErrFrame, false, WinSize{}},
		{"long hello", frames(Hello, append(hello{Version: Version}.encode(), 0)), ErrFrame, false, WinSize{}},
		{"hello of version 99", frames(Hello, hello{Version: 99}.encode()), ErrVersion, false, WinSize{}},
		{"truncated hello", frames(Hello, hello{Version: Version}.encode())[:8], io.ErrUnexpectedEOF, false, WinSize{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hc, gc := connPair(t)
			types := fakeHost(t, hc, tt.frames, true)
			ar := within(t, "Accept", func() acceptResult {
				g, err := Accept(gc)
				return acceptResult{g, err}
			})
			gc.Close()
			for _, typ := range within(t, "the fake host", func() []Type { return <-types }) {
				if typ != Announce {
					t.Errorf("Accept() sent %v, want only %v", typ, Announce)
				}
			}
			if tt.wantErr != nil {
				if !errors.Is(ar.err, tt.wantErr) {
					t.Errorf("Accept() = %v, %v, want %v", ar.g, ar.err, tt.wantErr)
				}
				return
			}
			if ar.err != nil {
				t.Fatalf("Accept() = %v, want nil", ar.err)
			}
			if tty, size := ar.g.TTY(); tty != tt.tty || size != tt.size {
				t.Errorf("Guest.TTY() = %v, %+v, want %v, %+v", tty, size, tt.tty, tt.size)
			}
		})
	}
}

// rw joins a reader and a writer into one end of a channel.
type rw struct {
	io.Reader
	io.Writer
}

// prefixConn writes prefix, in one Write with them, before the first bytes
// written to it.
type prefixConn struct {
	io.ReadWriter
	prefix []byte
	once   sync.Once
}

func (c *prefixConn) Write(p []byte) (int, error) {
	var pre []byte
	c.once.Do(func() { pre = c.prefix })
	if pre == nil {
		return c.ReadWriter.Write(p)
	}
	n, err := c.ReadWriter.Write(append(bytes.Clone(pre), p...))
	return max(n-len(pre), 0), err
}

// TestGarbageBeforeAnnounce checks that the host skips whatever the channel
// delivers before the guest's first announce (a pty's echo and leftovers)
// and that the session then works.
func TestGarbageBeforeAnnounce(t *testing.T) {
	noise := randomBytes(200<<10, 10) // more than the Reader's buffer
	if bytes.Contains(noise, announceHeader) {
		t.Fatalf("the noise holds an announce header")
	}
	for _, tt := range []struct {
		name    string
		garbage []byte
	}{
		{"pty echo", []byte("^A^@^@^@^I^@^@^X^@P^A\r\n")},
		{"raw hello header", []byte{byte(Hello), 0, 0, 0, 9}},
		{"random noise", noise[:1000]},
		{"noise over the reader's buffer", noise},
		{"header prefix then other bytes", []byte{2, 0, 0, 7, 'x'}},
		{"header prefixes", []byte{2, 2, 0, 2, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 0, 4}},
		{"header prefix right before", []byte{2, 0, 0}},
		{"longer header prefix right before", []byte{2, 0, 0, 0}},
		{"announce type alone right before", []byte{2}},
		{"short announce", []byte{byte(Announce), 0, 0, 0, 2, 0, 1}},
		{"tail of an announce", announceFrame[3:]},
		{"output frame", frames(Stdout, []byte("early"))},
		{"failure frame", frames(Failure, (&Failed{125, "stale"}).encode())},
	} {
		for _, how := range []struct {
			name string
			// wrap returns the channel's ends with garbage coming first.
			wrap func(hc, gc io.ReadWriter, garbage []byte) (io.ReadWriter, io.ReadWriter)
		}{
			{"read apart", func(hc, gc io.ReadWriter, g []byte) (io.ReadWriter, io.ReadWriter) {
				return rw{io.MultiReader(bytes.NewReader(g), hc), hc}, gc
			}},
			{"with the announce", func(hc, gc io.ReadWriter, g []byte) (io.ReadWriter, io.ReadWriter) {
				return hc, &prefixConn{ReadWriter: gc, prefix: g}
			}},
			{"one byte per read", func(hc, gc io.ReadWriter, g []byte) (io.ReadWriter, io.ReadWriter) {
				return rw{iotest.OneByteReader(io.MultiReader(bytes.NewReader(g), hc)), hc}, gc
			}},
		} {
			t.Run(tt.name+"/"+how.name, func(t *testing.T) {
				hc, gc := connPair(t)
				h2, g2 := how.wrap(hc, gc, tt.garbage)
				const in = "hello through the noise\n"
				var stdout, stderr bytes.Buffer
				h := &Host{Stdin: strings.NewReader(in), Stdout: &stdout, Stderr: &stderr}
				st, err, g := sessionOn(t, h2, g2, h, cat)
				if err != nil || st != (Status{}) || g.err != nil {
					t.Errorf("Run() = %+v, %v (guest: %v), want %+v, nil (guest: nil)", st, err, g.err, Status{})
				}
				if got := stdout.String(); got != in {
					t.Errorf("Run(): stdout = %q, want %q", got, in)
				}
				if stderr.Len() != 0 {
					t.Errorf("Run(): stderr = %q, want empty", stderr.String())
				}
			})
		}
		// A guest that announces once: the host must not miss that
		// announce for the garbage, which a real guest's repeats would
		// hide.
		t.Run(tt.name+"/announced once", func(t *testing.T) {
			hc := fakeGuest(t, func(r *Reader, w *Writer, c io.ReadWriteCloser) {
				c.Write(append(bytes.Clone(tt.garbage), announceFrame...))
				readHello(t, r)
				w.Write(Stdout, []byte("once"))
				w.Write(Exit, Status{}.encode())
			})
			var stdout bytes.Buffer
			h := &Host{Stdout: &stdout, Stderr: io.Discard}
			hr := within(t, "Host.Run", func() hostResult {
				st, err := h.Run(hc)
				return hostResult{st, err}
			})
			if hr.err != nil || hr.st != (Status{}) || stdout.String() != "once" {
				t.Errorf("Run() = %+v, %v, stdout %q, want %+v, nil, stdout %q", hr.st, hr.err, stdout.String(), Status{}, "once")
			}
		})
	}
}

// guestSpy counts the announces written to a guest's end of a channel and
// holds its first read back by delay.
type guestSpy struct {
	io.ReadWriter
	delay     time.Duration
	once      sync.Once
	announces atomic.Int32
}

func (c *guestSpy) Read(p []byte) (int, error) {
	c.once.Do(func() { time.Sleep(c.delay) })
	return c.ReadWriter.Read(p)
}

func (c *guestSpy) Write(p []byte) (int, error) {
	// One Write per frame, so p starts with the type.
	if len(p) > 0 && Type(p[0]) == Announce {
		c.announces.Add(1)
	}
	return c.ReadWriter.Write(p)
}

// TestRepeatedAnnounce checks that the announces that arrive after the host's
// hello are ignored.
func TestRepeatedAnnounce(t *testing.T) {
	t.Run("fake guest", func(t *testing.T) {
		hc := fakeGuest(t, func(r *Reader, w *Writer, _ io.ReadWriteCloser) {
			announce(t, r, w)
			for range 3 {
				w.Write(Announce, putU32(Version))
			}
			w.Write(Stdout, []byte("out"))
			w.Write(Announce, putU32(Version))
			w.Write(Stderr, []byte("err"))
			w.Write(Announce, putU32(Version))
			w.Write(Announce, putU32(Version))
			w.Write(Exit, Status{Code: 4}.encode())
		})
		var stdout, stderr bytes.Buffer
		h := &Host{Stdout: &stdout, Stderr: &stderr}
		hr := within(t, "Host.Run", func() hostResult {
			st, err := h.Run(hc)
			return hostResult{st, err}
		})
		if want := (Status{Code: 4}); hr.err != nil || hr.st != want {
			t.Errorf("Run() = %+v, %v, want %+v, nil", hr.st, hr.err, want)
		}
		if stdout.String() != "out" || stderr.String() != "err" {
			t.Errorf("Run(): stdout, stderr = %q, %q, want %q, %q", stdout.String(), stderr.String(), "out", "err")
		}
	})
	// A guest slow to read the hello goes on announcing, and on a buffered
	// channel its announces reach the host after the hello.
	t.Run("slow guest", func(t *testing.T) {
		hc, gc := socketPair()
		t.Cleanup(func() {
			hc.Close()
			gc.Close()
		})
		spy := &guestSpy{ReadWriter: gc, delay: 100 * time.Millisecond}
		const in = "after the repeats\n"
		var stdout bytes.Buffer
		h := &Host{Stdin: strings.NewReader(in), Stdout: &stdout, Stderr: io.Discard}
		st, err, g := sessionOn(t, hc, spy, h, cat)
		if err != nil || st != (Status{}) || g.err != nil {
			t.Errorf("Run() = %+v, %v (guest: %v), want %+v, nil (guest: nil)", st, err, g.err, Status{})
		}
		if got := stdout.String(); got != in {
			t.Errorf("Run(): stdout = %q, want %q", got, in)
		}
		if n := spy.announces.Load(); n < 2 {
			t.Errorf("the guest announced %d times while it did not read, want at least 2", n)
		}
	})
}

// lateChannel returns a channel whose guest-to-host direction goes through
// open, which reads what the guest writes before the host has opened the
// channel and returns how many bytes it dropped; the rest is passed on.
func lateChannel(t *testing.T, open func(from io.Reader) (dropped int, keep []byte)) (host, guest io.ReadWriteCloser, dropped func() int) {
	t.Helper()
	toGuest, fromHost := io.Pipe()
	raw, fromGuest := io.Pipe()
	toHost, fwd := io.Pipe()
	var n atomic.Int64
	go func() {
		d, keep := open(raw)
		n.Store(int64(d))
		if _, err := fwd.Write(keep); err == nil {
			_, err = io.Copy(fwd, raw)
			fwd.CloseWithError(err)
		}
		raw.CloseWithError(io.ErrClosedPipe)
	}()
	host, guest = pipeConn{toHost, fromHost}, pipeConn{toGuest, fromGuest}
	t.Cleanup(func() {
		host.Close()
		guest.Close()
		raw.Close()
	})
	return host, guest, func() int { return int(n.Load()) }
}

// TestAnnounceUntilHostOpens checks that the guest announces until the host
// has opened the channel and heard it, what it writes before being lost.
func TestAnnounceUntilHostOpens(t *testing.T) {
	const opens = 100 * time.Millisecond
	for _, tt := range []struct {
		name string
		open func(from io.Reader) (int, []byte)
	}{
		// A channel that drops what is written while the host has not
		// opened it.
		{"lost until open", func(from io.Reader) (int, []byte) {
			deadline := time.Now().Add(opens)
			buf := make([]byte, 64<<10)
			dropped := 0
			for {
				n, err := from.Read(buf)
				if time.Now().After(deadline) || err != nil {
					return dropped, buf[:n]
				}
				dropped += n
			}
		}},
		// A host that opens late and loses the first announce, or part of it.
		{"first announce lost", func(from io.Reader) (int, []byte) {
			time.Sleep(opens)
			n, _ := io.ReadFull(from, make([]byte, len(announceFrame)))
			return n, nil
		}},
		{"start of the first announce lost", func(from io.Reader) (int, []byte) {
			time.Sleep(opens)
			n, _ := io.ReadFull(from, make([]byte, 4))
			return n, nil
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hc, gc, dropped := lateChannel(t, tt.open)
			const in = "once opened\n"
			var stdout bytes.Buffer
			h := &Host{Stdin: strings.NewReader(in), Stdout: &stdout, Stderr: io.Discard}
			st, err, g := sessionOn(t, hc, gc, h, cat)
			if err != nil || st != (Status{}) || g.err != nil {
				t.Errorf("Run() = %+v, %v (guest: %v), want %+v, nil (guest: nil)", st, err, g.err, Status{})
			}
			if got := stdout.String(); got != in {
				t.Errorf("Run(): stdout = %q, want %q", got, in)
			}
			if dropped() == 0 {
				t.Errorf("the channel dropped nothing before the host opened it: the test tests nothing")
			}
		})
	}
}

// TestAnnounceBackoff checks that the guest's announces back off while the
// host is silent and stop once Accept has its hello.
func TestAnnounceBackoff(t *testing.T) {
	hc, gc := connPair(t)
	var count atomic.Int32
	bad := make(chan string, 1)
	go func() {
		r := NewReader(hc)
		for {
			typ, p, err := r.Next()
			if err != nil {
				return
			}
			if typ != Announce || !bytes.Equal(p, putU32(Version)) {
				select {
				case bad <- fmt.Sprintf("guest sent %v %x before the hello, want %v %x", typ, p, Announce, putU32(Version)):
				default:
				}
			}
			count.Add(1)
		}
	}()
	accepted := make(chan error, 1)
	go func() {
		_, err := Accept(gc)
		accepted <- err
	}()
	// Back-off from 10 ms, doubling: at 0, 10, 30, 70 and 150 ms.
	time.Sleep(300 * time.Millisecond)
	if n := count.Load(); n < 2 || n > 10 {
		t.Errorf("guest announced %d times in 300 ms, want 2 to 10", n)
	}
	if err := NewWriter(hc).Write(Hello, hello{Version: Version}.encode()); err != nil {
		t.Fatalf("writing the hello: %v", err)
	}
	if err := within(t, "Accept", func() error { return <-accepted }); err != nil {
		t.Fatalf("Accept() = %v, want nil", err)
	}
	before := count.Load()
	time.Sleep(400 * time.Millisecond)
	// One announce may have been on its way.
	if n := count.Load() - before; n > 1 {
		t.Errorf("guest announced %d times after Accept returned, want at most 1", n)
	}
	select {
	case msg := <-bad:
		t.Error(msg)
	default:
	}
}

// TestAwaitAnnounce checks the host's wait for the guest's announce alone.
func TestAwaitAnnounce(t *testing.T) {
	errRead := errors.New("read failed")
	for _, tt := range []struct {
		name  string
		input io.Reader
		want  error  // nil, ErrEnded, ErrVersion or errRead
		rest  string // what follows the announce
	}{
		{"announce", bytes.NewReader(announceFrame), nil, ""},
		{"announce and more", bytes.NewReader(append(bytes.Clone(announceFrame), "more"...)), nil, "more"},
		{"after garbage", bytes.NewReader(append([]byte("^A^@^@\x02\x00\x00\x00"), announceFrame...)), nil, ""},
		{"one byte per read", iotest.OneByteReader(bytes.NewReader(append([]byte{2, 0, 2, 0, 0}, announceFrame...))), nil, ""},
		{"twice", bytes.NewReader(append(bytes.Clone(announceFrame), announceFrame...)), nil, string(announceFrame)},
		{"version 99", bytes.NewReader(frames(Announce, putU32(99))), ErrVersion, ""},
		{"version 99 first", bytes.NewReader(append(frames(Announce, putU32(99)), announceFrame...)), ErrVersion, ""},
		{"empty", bytes.NewReader(nil), ErrEnded, ""},
		{"garbage only", strings.NewReader("^A^@^@"), ErrEnded, ""},
		{"header only", bytes.NewReader(announceHeader), ErrEnded, ""},
		{"inside the version", bytes.NewReader(announceFrame[:7]), ErrEnded, ""},
		{"read error while skipping", io.MultiReader(strings.NewReader("xx"), iotest.ErrReader(errRead)), errRead, ""},
		{"read error inside the version", io.MultiReader(bytes.NewReader(announceFrame[:6]), iotest.ErrReader(errRead)), errRead, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReader(tt.input)
			err := awaitAnnounce(r)
			if tt.want == nil && err != nil || tt.want == ErrEnded && err != ErrEnded || !errors.Is(err, tt.want) {
				t.Fatalf("awaitAnnounce() = %v, want %v", err, tt.want)
			}
			if err != nil {
				return
			}
			if rest, _ := io.ReadAll(r.r); string(rest) != tt.rest {
				t.Errorf("awaitAnnounce() left %q, want %q", rest, tt.rest)
			}
		})
	}
}

// callRecorder records each call to Write.
type callRecorder struct {
	mu    sync.Mutex
	calls [][]byte
}

func (c *callRecorder) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, bytes.Clone(p))
	return len(p), nil
}

// TestWriterOneWritePerFrame checks that a frame is one Write, header and
// payload: one system call, never split between concurrent writers.
func TestWriterOneWritePerFrame(t *testing.T) {
	var rec callRecorder
	w := NewWriter(&rec)
	payloads := [][]byte{nil, {}, []byte("x"), putU32(Version), randomBytes(MaxPayload, 11)}
	for _, p := range payloads {
		if err := w.Write(Stdout, p); err != nil {
			t.Fatalf("Write(%d bytes) = %v, want nil", len(p), err)
		}
	}
	if len(rec.calls) != len(payloads) {
		t.Fatalf("%d frames written in %d Write calls, want %d", len(payloads), len(rec.calls), len(payloads))
	}
	for i, p := range payloads {
		if want := frames(Stdout, p); !bytes.Equal(rec.calls[i], want) {
			t.Errorf("Write #%d = %d bytes, want the %d bytes of the frame", i, len(rec.calls[i]), len(want))
		}
	}

	rec.calls = nil
	const writers, each = 8, 200
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			for j := range each {
				w.Write(Type(i+1), bytes.Repeat([]byte{byte(i)}, j*37%5000))
			}
		})
	}
	wg.Wait()
	if len(rec.calls) != writers*each {
		t.Fatalf("%d frames written in %d Write calls, want %d", writers*each, len(rec.calls), writers*each)
	}
	for _, c := range rec.calls {
		fs, err := readAll(NewReader(bytes.NewReader(c)))
		if err != io.EOF || len(fs) != 1 {
			t.Fatalf("Write call of %d bytes holds %d frames then %v, want 1 then EOF", len(c), len(fs), err)
		}
		if i := byte(fs[0].t) - 1; !bytes.Equal(fs[0].p, bytes.Repeat([]byte{i}, len(fs[0].p))) {
			t.Fatalf("frame %v mixes writers' payloads", fs[0].t)
		}
	}
}

// frames encodes pairs of type and payload as frames.
func frames(tp ...any) []byte {
	var b bytes.Buffer
	w := NewWriter(&b)
	for i := 0; i < len(tp); i += 2 {
		p, _ := tp[i+1].([]byte)
		if err := w.Write(tp[i].(Type), p); err != nil {
			panic(err)
		}
	}
	return b.Bytes()
}

type frame struct {
	t Type
	p []byte
}

// readAll reads frames until an error, which it returns with them.
func readAll(r *Reader) ([]frame, error) {
	var fs []frame
	for {
		t, p, err := r.Next()
		if err != nil {
			return fs, err
		}
		fs = append(fs, frame{t, bytes.Clone(p)})
	}
}

func TestFrameRoundTrip(t *testing.T) {
	want := []frame{
		{Hello, hello{Version: Version, TTY: true, Size: WinSize{Rows: 24, Cols: 80}}.encode()},
		{Stdout, []byte{}},
		{Stderr, []byte("x")},
		{Stdin, randomBytes(MaxPayload, 9)},
		{Exit, Status{Code: -2, Signal: 0}.encode()},
		{Type(0), []byte{}},
		{Type(255), []byte("unknown types are framed all the same")},
	}
	var b bytes.Buffer
	w := NewWriter(&b)
	for _, f := range want {
		if err := w.Write(f.t, f.p); err != nil {
			t.Fatalf("Write(%v, %d bytes) = %v, want nil", f.t, len(f.p), err)
		}
	}
	size := 0
	for _, f := range want {
		size += headerLen + len(f.p)
	}
	if b.Len() != size {
		t.Errorf("Write: %d bytes written, want %d", b.Len(), size)
	}
	got, err := readAll(NewReader(&b))
	if err != io.EOF {
		t.Errorf("Next() = %v at the end, want %v", err, io.EOF)
	}
	if len(got) != len(want) {
		t.Fatalf("Next(): %d frames, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].t != want[i].t || !bytes.Equal(got[i].p, want[i].p) {
			t.Errorf("Next() #%d = %v, %d bytes, want %v, %d bytes", i, got[i].t, len(got[i].p), want[i].t, len(want[i].p))
		}
	}
}

func TestWriteData(t *testing.T) {
	for _, n := range []int{0, 1, MaxPayload - 1, MaxPayload, MaxPayload + 1, 3*MaxPayload + 5} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			data := randomBytes(n, uint64(n))
			var b bytes.Buffer
			if err := NewWriter(&b).WriteData(Stdout, data); err != nil {
				t.Fatalf("WriteData(%d bytes) = %v, want nil", n, err)
			}
			fs, err := readAll(NewReader(&b))
			if err != io.EOF {
				t.Errorf("Next() = %v at the end, want %v", err, io.EOF)
			}
			if want := (n + MaxPayload - 1) / MaxPayload; len(fs) != want {
				t.Errorf("WriteData(%d bytes): %d frames, want %d", n, len(fs), want)
			}
			var got []byte
			for _, f := range fs {
				if f.t != Stdout || len(f.p) == 0 || len(f.p) > MaxPayload {
					t.Errorf("WriteData(%d bytes): frame %v of %d bytes, want %v of 1 to %d", n, f.t, len(f.p), Stdout, MaxPayload)
				}
				got = append(got, f.p...)
			}
			if !bytes.Equal(got, data) {
				t.Errorf("WriteData(%d bytes): got %s, want %s", n, digestOf(got), digestOf(data))
			}
		})
	}
}

func TestWriteTooLarge(t *testing.T) {
	var b bytes.Buffer
	w := NewWriter(&b)
	if err := w.Write(Stdout, make([]byte, MaxPayload+1)); !errors.Is(err, ErrFrame) {
		t.Errorf("Write(%d bytes) = %v, want %v", MaxPayload+1, err, ErrFrame)
	}
	if b.Len() != 0 {
		t.Errorf("Write(%d bytes) wrote %d bytes, want 0", MaxPayload+1, b.Len())
	}
}

func TestReadErrors(t *testing.T) {
	valid := frames(Stdout, []byte("ok"))
	for _, tt := range []struct {
		name  string
		input []byte
		n     int // frames read before the error
		want  error
	}{
		{"empty", nil, 0, io.EOF},
		{"after a frame", valid, 1, io.EOF},
		{"inside a header", []byte{byte(Stdout), 0, 0}, 0, io.ErrUnexpectedEOF},
		{"type only", []byte{byte(Stdout)}, 0, io.ErrUnexpectedEOF},
		{"header only", []byte{byte(Stdout), 0, 0, 0, 4}, 0, io.ErrUnexpectedEOF},
		{"inside a payload", []byte{byte(Stdout), 0, 0, 0, 4, 'a', 'b'}, 0, io.ErrUnexpectedEOF},
		{"truncated after a frame", append(bytes.Clone(valid), byte(Stderr), 0, 0, 0, 1), 1, io.ErrUnexpectedEOF},
		{"over MaxPayload", append([]byte{byte(Stdout)}, putU32(MaxPayload+1)...), 0, ErrFrame},
		{"huge", append([]byte{byte(Stdout)}, putU32(1<<32-1)...), 0, ErrFrame},
		{"over MaxPayload after a frame", append(bytes.Clone(valid), append([]byte{byte(Stdout)}, putU32(MaxPayload+1)...)...), 1, ErrFrame},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fs, err := readAll(NewReader(bytes.NewReader(tt.input)))
			if len(fs) != tt.n {
				t.Errorf("Next(): %d frames before the error, want %d", len(fs), tt.n)
			}
			if tt.want == io.EOF && err != io.EOF || !errors.Is(err, tt.want) {
				t.Errorf("Next() = %v, want %v", err, tt.want)
			}
		})
	}
}

// repeat reads b again and again.
type repeat struct {
	b   []byte
	off int
}

func (r *repeat) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k := copy(p[n:], r.b[r.off:])
		n += k
		r.off = (r.off + k) % len(r.b)
	}
	return n, nil
}

// TestReaderAllocs checks that reading a frame allocates nothing for its
// payload: the Reader's buffer is the only memory a frame commits.
func TestReaderAllocs(t *testing.T) {
	const count = 1000
	for _, n := range []int{0, 100, MaxPayload} {
		r := NewReader(&repeat{b: frames(Stdout, make([]byte, n))})
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range count {
			if _, p, err := r.Next(); err != nil || len(p) != n {
				t.Fatalf("Next() = %d bytes, %v, want %d bytes, nil", len(p), err, n)
			}
		}
		runtime.ReadMemStats(&after)
		if got := (after.TotalAlloc - before.TotalAlloc) / count; got > 64 {
			t.Errorf("Next() of a %d-byte frame allocates %d bytes, want at most 64", n, got)
		}
	}
}

func TestTypeString(t *testing.T) {
	for _, tt := range []struct {
		t    Type
		want string
	}{
		{Hello, "hello"},
		{Announce, "announce"},
		{Stdin, "stdin"},
		{StdinEOF, "stdin-eof"},
		{ExitAck, "exit-ack"},
		{0, "type(0)"},
		{Files, "files"},
		{FilesEnd, "files-end"},
		{PortsOpen, "ports-open"},
		{StdinReady, "stdin-ready"},
		{17, "type(17)"},
		{255, "type(255)"},
	} {
		if got := tt.t.String(); got != tt.want {
			t.Errorf("Type(%d).String() = %q, want %q", byte(tt.t), got, tt.want)
		}
	}
}

func TestMessages(t *testing.T) {
	for _, h := range []hello{
		{Version: Version},
		{Version: Version, TTY: true, Size: WinSize{Rows: 24, Cols: 80}},
		{Version: Version, Size: WinSize{Rows: 65535, Cols: 1}},
		{Version: Version, DataPorts: true},
	} {
		if got, err := decodeHello(h.encode()); err != nil || got != h {
			t.Errorf("decodeHello(%+v.encode()) = %+v, %v, want %+v, nil", h, got, err, h)
		}
	}
	if got, err := decodeHello(putU32(Version + 1)); err != nil || got.Version != Version+1 {
		t.Errorf("decodeHello(version %d only) = %+v, %v, want version %d, nil", Version+1, got, err, Version+1)
	}
	for _, st := range []Status{{}, {Code: 1}, {Code: -1}, {Code: 1<<31 - 1}, {Code: -1 << 31}, {Signal: 9}, {Signal: 64}} {
		if got, _, err := decodeExit(encodeExit(st, nil), false); err != nil || got != st {
			t.Errorf("decodeExit(encodeExit(%+v, nil)) = %+v, %v, want %+v, nil", st, got, err, st)
		}
		n := counts{stdout: 1 << 40, stderr: 7}
		if got, gotN, err := decodeExit(encodeExit(st, &n), true); err != nil || got != st || gotN != n {
			t.Errorf("decodeExit(encodeExit(%+v, %+v)) = %+v, %+v, %v, want %+v, %+v, nil", st, n, got, gotN, err, st, n)
		}
		if _, _, err := decodeExit(encodeExit(st, nil), true); !errors.Is(err, ErrFrame) {
			t.Errorf("decodeExit of an exit without counts where data ports are used = %v, want ErrFrame", err)
		}
	}
	for _, ws := range []WinSize{{}, {Rows: 1, Cols: 2}, {Rows: 65535, Cols: 65535}} {
		if got, err := decodeWinSize(Winsize, ws.encode()); err != nil || got != ws {
			t.Errorf("decodeWinSize(%+v.encode()) = %+v, %v, want %+v, nil", ws, got, err, ws)
		}
	}
	for _, f := range []Failed{{127, "x: not found"}, {0, ""}, {255, "é"}} {
		if got, err := decodeFailed(f.encode()); err != nil || *got != f {
			t.Errorf("decodeFailed(%+v.encode()) = %+v, %v, want %+v, nil", f, got, err, f)
		}
	}
	for _, tt := range []struct {
		name string
		err  error
	}{
		{"decodeHello(3 bytes)", second(decodeHello([]byte{0, 0, 0}))},
		{"decodeHello(8 bytes)", second(decodeHello(hello{Version: Version}.encode()[:8]))},
		{"decodeExit(7 bytes)", third(decodeExit(make([]byte, 7), false))},
		{"decodeExit(9 bytes)", third(decodeExit(make([]byte, 9), false))},
		{"decodeExit(23 bytes, ports)", third(decodeExit(make([]byte, 23), true))},
		{"decodeWinSize(3 bytes)", second(decodeWinSize(Winsize, make([]byte, 3)))},
		{"decodeFailed(0 bytes)", second(decodeFailed(nil))},
		{"getU32(5 bytes)", second(getU32(StdinAck, make([]byte, 5)))},
	} {
		if !errors.Is(tt.err, ErrFrame) {
			t.Errorf("%s = %v, want %v", tt.name, tt.err, ErrFrame)
		}
	}
}

func second[T any](_ T, err error) error { return err }

func third[T, U any](_ T, _ U, err error) error { return err }

func FuzzReader(f *testing.F) {
	f.Add([]byte{})
	f.Add(frames(Hello, hello{Version: Version, TTY: true}.encode(), Stdout, []byte("out"), Exit, Status{}.encode()))
	f.Add(append([]byte{byte(Stdout)}, putU32(MaxPayload+1)...))
	f.Add(append([]byte{byte(Stdout)}, putU32(MaxPayload)...))
	f.Add([]byte{byte(Stdout), 0, 0, 0, 4, 'a'})
	f.Add(frames(Announce, putU32(Version), Announce, putU32(99), Hello, hello{Version: Version}.encode()))
	f.Add(append([]byte("^A^@^@"), announceFrame...))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data))
		buf := &r.buf[:1][0]
		// Every frame has a header, so there are at most this many.
		for i := 0; i <= len(data)/headerLen; i++ {
			_, p, err := r.Next()
			if err != nil {
				if err != io.EOF && err != io.ErrUnexpectedEOF && !errors.Is(err, ErrFrame) {
					t.Fatalf("Next() = %v, want io.EOF, io.ErrUnexpectedEOF or %v", err, ErrFrame)
				}
				return
			}
			if len(p) > MaxPayload {
				t.Fatalf("Next() = %d bytes, want at most %d", len(p), MaxPayload)
			}
			// The payload must be the Reader's own buffer: no frame makes
			// it allocate.
			if cap(p) != MaxPayload || &p[:1][0] != buf {
				t.Fatalf("Next() = a payload outside the Reader's buffer")
			}
		}
		t.Fatalf("Next() returned more than %d frames from %d bytes", len(data)/headerLen, len(data))
	})
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte{})
	f.Add(hello{Version: Version, TTY: true, Size: WinSize{Rows: 24, Cols: 80}}.encode())
	f.Add(putU32(99))
	f.Add(Status{Code: -1, Signal: 15}.encode())
	f.Add((&Failed{127, "x: not found"}).encode())
	f.Add(WinSize{Rows: 1, Cols: 2}.encode())
	f.Fuzz(func(t *testing.T, p []byte) {
		if h, err := decodeHello(p); err == nil {
			if len(p) < 4 || h.Version != binary.BigEndian.Uint32(p) {
				t.Errorf("decodeHello(%x) = %+v, want version from the first 4 bytes", p, h)
			}
			if h.Version == Version && (len(p) < 9 || !bytes.Equal(h.encode()[:8], p[:8])) {
				t.Errorf("decodeHello(%x) = %+v, which encodes differently", p, h)
			}
		} else if !errors.Is(err, ErrFrame) {
			t.Errorf("decodeHello(%x) = %v, want %v", p, err, ErrFrame)
		}
		for _, ports := range []bool{false, true} {
			st, n, err := decodeExit(p, ports)
			if err != nil {
				if !errors.Is(err, ErrFrame) {
					t.Errorf("decodeExit(%x, %v) = %v, want %v", p, ports, err, ErrFrame)
				}
				continue
			}
			var np *counts
			if ports {
				np = &n
			}
			if e := encodeExit(st, np); !bytes.Equal(e, p) {
				t.Errorf("decodeExit(%x, %v) = %+v, %+v, which encodes as %x", p, ports, st, n, e)
			}
		}
		if fl, err := decodeFailed(p); err == nil {
			if fl.Status != int(p[0]) || fl.Message != string(p[1:]) {
				t.Errorf("decodeFailed(%x) = %+v", p, fl)
			}
		} else if !errors.Is(err, ErrFrame) {
			t.Errorf("decodeFailed(%x) = %v, want %v", p, err, ErrFrame)
		}
		if ws, err := decodeWinSize(Winsize, p); err == nil {
			if !bytes.Equal(ws.encode(), p) {
				t.Errorf("decodeWinSize(%x) = %+v, which encodes as %x", p, ws, ws.encode())
			}
		} else if !errors.Is(err, ErrFrame) {
			t.Errorf("decodeWinSize(%x) = %v, want %v", p, err, ErrFrame)
		}
	})
}

// FuzzAwaitAnnounce checks the host's wait for the announce against the
// obvious reading: the first announce header in the input, and the version
// after it.
func FuzzAwaitAnnounce(f *testing.F) {
	f.Add([]byte{})
	f.Add(bytes.Clone(announceFrame))
	f.Add(append([]byte("^A^@^@\x02\x00\x00"), announceFrame...))
	f.Add(append([]byte{2, 0, 0, 2, 0, 0, 0}, frames(Announce, putU32(99), Stdout, []byte("x"))...))
	f.Add([]byte{2, 0, 0, 0, 4, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data))
		err := awaitAnnounce(r)
		i := bytes.Index(data, announceHeader)
		switch {
		case i < 0 || len(data) < i+len(announceFrame):
			if err != ErrEnded {
				t.Fatalf("awaitAnnounce(%x) = %v, want %v", data, err, ErrEnded)
			}
		case binary.BigEndian.Uint32(data[i+headerLen:]) != Version:
			v := binary.BigEndian.Uint32(data[i+headerLen:])
			if !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), fmt.Sprintf("version %d", v)) {
				t.Fatalf("awaitAnnounce(%x) = %v, want %v naming version %d", data, err, ErrVersion, v)
			}
		default:
			if err != nil {
				t.Fatalf("awaitAnnounce(%x) = %v, want nil", data, err)
			}
			if rest, _ := io.ReadAll(r.r); !bytes.Equal(rest, data[i+len(announceFrame):]) {
				t.Fatalf("awaitAnnounce(%x) left %x, want %x", data, rest, data[i+len(announceFrame):])
			}
		}
	})
}

// eofUntilHost reads end of file until its host "connects", as a virtio
// port does while nobody has its host side open, then reads what the host
// sent.
type eofUntilHost struct {
	mu      sync.Mutex
	reads   int
	pending []byte
	written bytes.Buffer
}

func (e *eofUntilHost) Read(p []byte) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.reads++
	if e.reads < 3 || len(e.pending) == 0 {
		return 0, io.EOF
	}
	n := copy(p, e.pending)
	e.pending = e.pending[n:]
	return n, nil
}

func (e *eofUntilHost) Write(p []byte) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.written.Write(p)
}

// TestAcceptWaitsThroughEOF: end of file before the hello means no host yet,
// not the end: Accept keeps waiting.
func TestAcceptWaitsThroughEOF(t *testing.T) {
	port := &eofUntilHost{pending: frames(Hello, hello{Version: Version}.encode())}
	g := within(t, "Accept", func() *Guest {
		g, err := Accept(port)
		if err != nil {
			t.Errorf("Accept() = %v, want a session", err)
		}
		return g
	})
	if g == nil {
		t.Fatal("Accept() = nil")
	}
	port.mu.Lock()
	defer port.mu.Unlock()
	if port.reads < 3 {
		t.Errorf("Accept() read %d times, want it to have read past the ends of file", port.reads)
	}
}

func TestResume(t *testing.T) {
	m := Resume{Time: time.Unix(1796000000, 123456789)}
	for i := range m.Entropy {
		m.Entropy[i] = byte(i * 7)
	}
	var b bytes.Buffer
	if err := SendResume(&b, m); err != nil {
		t.Fatal(err)
	}
	if b.Len() != ResumeSize {
		t.Fatalf("resume message of %d bytes, want %d", b.Len(), ResumeSize)
	}
	got, err := DecodeResume(b.Bytes())
	if err != nil || !got.Time.Equal(m.Time) || got.Entropy != m.Entropy {
		t.Errorf("DecodeResume = %+v, %v; want %+v", got, err, m)
	}
	bad := bytes.Replace(b.Bytes(), []byte("VSRESUME"), []byte("XXRESUME"), 1)
	if _, err := DecodeResume(bad); !errors.Is(err, ErrFrame) {
		t.Errorf("DecodeResume of a message without its magic: %v, want ErrFrame", err)
	}
	if err := AwaitReady(strings.NewReader("noise" + string(rune(ReadyByte)))); err != nil {
		t.Errorf("AwaitReady with a ready byte: %v", err)
	}
	if err := AwaitReady(strings.NewReader("noise")); err == nil {
		t.Error("AwaitReady without a ready byte and at end of file: no error")
	}
}
