package console

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// portPair returns a UNIX socket pair as the host's end of a data port (a
// connection, as the launcher dials QEMU's socket) and the guest's (a file,
// as the init opens the port's device).
func portPair(t *testing.T) (*net.UnixConn, *os.File) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	hf := os.NewFile(uintptr(fds[0]), "host")
	defer hf.Close()
	c, err := net.FileConn(hf)
	if err != nil {
		t.Fatal(err)
	}
	guest := os.NewFile(uintptr(fds[1]), "guest")
	t.Cleanup(func() {
		c.Close()
		guest.Close()
	})
	return c.(*net.UnixConn), guest
}

// TestDataPorts runs a session whose stdio goes through data ports: the
// program reads the stdin port until the host ends it, and its output,
// written to pipes, is spliced into the ports and read by the host in full
// before it reports the exit.
func TestDataPorts(t *testing.T) {
	in, errOut := randomBytes(8<<20, 4), randomBytes(3<<20, 5)
	var hp HostPorts
	var gp GuestPorts
	hin, gin := portPair(t)
	hout, gout := portPair(t)
	herr, gerr := portPair(t)
	hp.Stdin, hp.Stdout, hp.Stderr = hin, hout, herr
	gp.Stdin, gp.Stdout, gp.Stderr = gin, gout, gerr

	hp.Close = func() {}
	stdout, stderr := newDigest(), newDigest()
	// The host connects to the ports only once the guest has opened them
	// (see data.go: QEMU would not look at bytes sent before).
	var opened atomic.Bool
	dial := func() (*HostPorts, error) {
		if !opened.Load() {
			t.Error("the host dialed the ports before the guest opened them")
		}
		return &hp, nil
	}
	h := &Host{Stdin: bytes.NewReader(in), Stdout: stdout, Stderr: stderr, DialPorts: dial}
	hc, gc := connPair(t)
	gres := make(chan error, 1)
	go func() {
		g, err := Accept(gc)
		if err != nil {
			gres <- err
			return
		}
		if !g.DataPorts() {
			gres <- io.ErrNoProgress
			return
		}
		opened.Store(true)
		if err := g.OpenPorts(&gp, time.Now().Add(time.Minute)); err != nil {
			gres <- err
			return
		}
		gres <- g.Serve(pipedProgram(t, &gp, errOut))
	}()
	hr := within(t, "Host.Run", func() hostResult {
		st, err := h.Run(hc)
		return hostResult{st, err}
	})
	if err := within(t, "Accept+Guest.Serve", func() error { return <-gres }); err != nil {
		t.Errorf("guest: %v", err)
	}
	if hr.err != nil || hr.st != (Status{Code: 3}) {
		t.Errorf("Run() = %+v, %v, want exit 3, nil", hr.st, hr.err)
	}
	if got, want := stdout.String(), digestOf(in); got != want {
		t.Errorf("stdout = %s, want %s", got, want)
	}
	if got, want := stderr.String(), digestOf(errOut); got != want {
		t.Errorf("stderr = %s, want %s", got, want)
	}
}

// pipedProgram is a program on real pipes, as the init starts one with
// data ports: it copies the stdin port to its stdout until the end, writes
// errOut to its stderr and exits with 3.
func pipedProgram(t *testing.T, ports *GuestPorts, errOut []byte) Program {
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan Status, 1)
	go func() {
		go func() {
			errW.Write(errOut)
			errW.Close()
		}()
		io.Copy(outW, ports.Stdin)
		outW.Close()
		done <- Status{Code: 3}
	}()
	return Program{
		Stdout: outR,
		Stderr: errR,
		Ports:  ports,
		Wait:   func() Status { return <-done },
	}
}

// TestDataPortsOrder: the guest says PortsOpen, then StdinReady, each
// once, and exits only after them; anything else is a malformed session.
func TestDataPortsOrder(t *testing.T) {
	exit := encodeExit(Status{}, &counts{})
	for _, tt := range []struct {
		name string
		sent []Type
	}{
		{"stdin ready first", []Type{StdinReady}},
		{"ports open twice", []Type{PortsOpen, PortsOpen}},
		{"stdin ready twice", []Type{PortsOpen, StdinReady, StdinReady}},
		{"exit before ports open", []Type{Exit}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hc := fakeGuest(t, func(r *Reader, w *Writer, _ io.ReadWriteCloser) {
				announce(t, r, w)
				for _, f := range tt.sent {
					var p []byte
					if f == Exit {
						p = exit
					}
					w.Write(f, p)
				}
			})
			hin, _ := portPair(t)
			hout, _ := portPair(t)
			herr, _ := portPair(t)
			dial := func() (*HostPorts, error) {
				return &HostPorts{Stdin: hin, Stdout: hout, Stderr: herr, Close: func() {}}, nil
			}
			h := &Host{Stdout: io.Discard, Stderr: io.Discard, DialPorts: dial}
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
