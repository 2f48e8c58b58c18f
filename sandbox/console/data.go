package console

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Data ports. Where the host can reach the guest's virtio-serial ports
// without libvirtd (a QEMU sandbox on this machine), the program's stdin,
// stdout and stderr each get a port of their own beside the app channel,
// and their bytes travel raw, without frames: the frames then carry only
// control.
//
// Opening: the guest opens its ends first and says PortsOpen; only then
// does the host connect. QEMU reads a port's socket only while the guest
// has the port open, and it looks again only when its main loop wakes:
// the guest's open does not wake it, a connection does. Bytes the host
// wrote before the guest's open could wait in the socket until some
// timer woke QEMU, which in an idle guest (a tickless kernel, a program
// blocked on its stdin) took up to tens of seconds.
//
// Stdin: the program reads the stdin port itself (a port read gives one
// page; a relay through the init cost a pipe write and a wake-up per
// page). Its end is the host's: when the host shuts its socket for
// writing, QEMU delivers what is left and then tells the guest the host
// is gone, which the program reads as end of file. A port whose host is
// not yet connected also reads as ended, so the guest sends StdinReady
// once it has seen the host connected, and the host shuts its end only
// after that.
//
// Stdout and stderr: the program writes pipes that the init splices into
// the ports (no copy in the guest, many pages per virtio kick). The host
// learns nothing when the guest closes a port, so Exit carries how many
// bytes the init moved, and the host reads them all before it reports
// the exit.

// HostPorts are the host's ends of the data ports: connections to the
// sockets QEMU listens on for the ports.
type HostPorts struct {
	Stdin interface {
		io.Writer
		CloseWrite() error
	}
	Stdout, Stderr io.Reader
	// Close closes the three.
	Close func()
}

// hostPorts is the host's side of the data ports during a run: nothing
// until the guest says PortsOpen, then the copies.
type hostPorts struct {
	dial   func() (*HostPorts, error)
	ports  *HostPorts
	drains [2]*drain
	// ready is closed at StdinReady: the stdin copy may end the port.
	ready chan struct{}
}

// open connects to the ports, at the guest's PortsOpen, and starts the
// copies: the caller's stdin into the stdin port until done, the output
// ports to stdout and stderr.
func (hp *hostPorts) open(stdin io.Reader, stdout, stderr *output, done <-chan struct{}) error {
	if hp.ports != nil {
		return fmt.Errorf("%w: a second %s from the sandbox", ErrFrame, PortsOpen)
	}
	ports, err := hp.dial()
	if err != nil {
		return err
	}
	hp.ports, hp.ready = ports, make(chan struct{})
	go pumpStdinPort(stdin, ports.Stdin, hp.ready, done)
	hp.drains = [2]*drain{newDrain(ports.Stdout, stdout), newDrain(ports.Stderr, stderr)}
	return nil
}

// control handles the guest's PortsOpen and StdinReady, each once and in
// that order.
func (hp *hostPorts) control(t Type, stdin io.Reader, stdout, stderr *output, done <-chan struct{}) error {
	if t == PortsOpen {
		return hp.open(stdin, stdout, stderr, done)
	}
	if hp.ports == nil || isClosed(hp.ready) {
		return fmt.Errorf("%w: unexpected %s from the sandbox", ErrFrame, t)
	}
	close(hp.ready)
	return nil
}

// await waits for the output the guest says it sent, at its Exit.
func (hp *hostPorts) await(n counts) error {
	if hp.ports == nil {
		return fmt.Errorf("%w: %s before %s", ErrFrame, Exit, PortsOpen)
	}
	if err := hp.drains[0].await(n.stdout); err != nil {
		return err
	}
	return hp.drains[1].await(n.stderr)
}

func (hp *hostPorts) close() {
	if hp.ports != nil {
		hp.ports.Close()
	}
}

// pumpStdinPort copies stdin (nil: an empty stdin) to the stdin port, and
// at its end shuts the port's socket for writing once the guest is ready
// for it.
func pumpStdinPort(stdin io.Reader, port interface {
	io.Writer
	CloseWrite() error
}, ready, done <-chan struct{}) {
	if stdin != nil {
		buf := make([]byte, drainBuffer)
		for {
			n, err := stdin.Read(buf)
			if n > 0 {
				if _, err := port.Write(buf[:n]); err != nil {
					// The port is gone: the run is ending.
					return
				}
			}
			if err != nil {
				break
			}
		}
	}
	select {
	case <-ready:
		port.CloseWrite()
	case <-done:
	}
}

// GuestPorts are the guest's ends of the data ports: the port devices.
type GuestPorts struct {
	Stdin, Stdout, Stderr *os.File
}

// counts is what the frames say of the raw streams: bytes of stdout and
// stderr, which follow Exit's status.
type counts struct{ stdout, stderr uint64 }

// drain copies a data port's stream to w, counting, until it has copied
// what the guest said it sent. When w breaks, the rest is read and
// dropped, and the program gets SIGPIPE (output does that).
type drain struct {
	mu   sync.Mutex
	cond *sync.Cond
	n    uint64
	err  error
}

func newDrain(r io.Reader, out *output) *drain {
	d := &drain{}
	d.cond = sync.NewCond(&d.mu)
	go d.run(r, out)
	return d
}

// drainBuffer is what one read of a data port's socket takes at most.
const drainBuffer = 1 << 20

func (d *drain) run(r io.Reader, out *output) {
	buf := make([]byte, drainBuffer)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			out.write(buf[:n])
		}
		d.mu.Lock()
		d.n += uint64(n)
		if err != nil {
			d.err = err
		}
		d.mu.Unlock()
		d.cond.Broadcast()
		if err != nil {
			return
		}
	}
}

// await waits until n bytes have been copied, or the stream ended first.
func (d *drain) await(n uint64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for d.n < n && d.err == nil {
		d.cond.Wait()
	}
	if d.n < n {
		return fmt.Errorf("console: %d of %d bytes of output arrived: %w", d.n, n, d.err)
	}
	return nil
}

// OpenPorts tells the host that the guest has opened ports, waits until
// the host is connected to all three, or deadline, and tells the host it
// may end the stdin port. The program must not start before: a port
// whose host is not connected reads as ended.
func (g *Guest) OpenPorts(ports *GuestPorts, deadline time.Time) error {
	if err := g.w.Write(PortsOpen, nil); err != nil {
		return err
	}
	for _, port := range []*os.File{ports.Stdin, ports.Stdout, ports.Stderr} {
		if err := awaitHost(port, deadline); err != nil {
			return err
		}
	}
	return g.w.Write(StdinReady, nil)
}

// awaitHost waits until the host end of port is connected, or deadline. A
// port hangs up (POLLHUP) while its host is not connected, and poll then
// returns at once: so it is asked every few milliseconds.
func awaitHost(port *os.File, deadline time.Time) error {
	fd := int(port.Fd())
	for {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, 0); err != nil && err != unix.EINTR {
			return err
		}
		if fds[0].Revents&unix.POLLHUP == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("the host did not connect to the stdio ports")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// outputBatch and outputWait: a splice that moved less than outputBatch
// waits outputWait before the next, bounding the delay added to output.
const (
	outputBatch = 256 << 10
	outputWait  = time.Millisecond
)

// spliceOut moves what the program writes to pipe into port until the
// pipe's end, and returns how many bytes it moved. splice(2) moves the
// pipe's pages into the port without a copy; a kernel whose ports take no
// splice gets a copy.
func spliceOut(pipe io.Reader, port *os.File) uint64 {
	var moved uint64
	if f, ok := pipe.(*os.File); ok {
		// A large pipe: more pages per splice, fewer virtio kicks.
		unix.FcntlInt(f.Fd(), unix.F_SETPIPE_SZ, 1<<20)
		for {
			fds := []unix.PollFd{{Fd: int32(f.Fd()), Events: unix.POLLIN}}
			if _, err := unix.Poll(fds, -1); err == unix.EINTR {
				continue
			}
			n, err := unix.Splice(int(f.Fd()), nil, int(port.Fd()), nil, 1<<20, 0)
			if err == unix.EINTR || err == unix.EAGAIN {
				continue
			}
			if err == unix.EINVAL && moved == 0 {
				break
			}
			if err != nil || n == 0 && fds[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0 {
				return moved
			}
			moved += uint64(n)
			if n < outputBatch {
				// Let the program fill the pipe a while: woken at each
				// of its writes, the init would send a page or two
				// per virtio kick.
				time.Sleep(outputWait)
			}
		}
	}
	n, _ := io.CopyBuffer(port, pipe, make([]byte, 32<<10))
	return moved + uint64(n)
}
