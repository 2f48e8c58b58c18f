package sandbox

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/virt-sandbox/virt-sandbox/config"
	"github.com/virt-sandbox/virt-sandbox/config/guest"
	"github.com/virt-sandbox/virt-sandbox/sandbox/console"
)

// handsOverStdio tells whether the run gives the program its stdio as
// descriptors (console.Handover) rather than relaying it in frames: on a
// local LXC sandbox, whose config share is a directory of ours, when the
// program runs on pipes and there is a program to run (a stop request has
// none).
func (r *run) handsOverStdio() bool {
	return r.cfg.Driver == config.LXC && isLocal(r.cfg.URI) && !r.cfg.TTY &&
		(r.request == nil || len(r.request.Exec) > 0)
}

// hasDataPorts tells whether the machine has data ports: a local QEMU
// sandbox's virtio-serial ports are sockets of ours; a remote host's are
// not, and a service's sessions share their channels. A run with a
// terminal has them too, unused, so that one template serves runs with
// and without one.
func hasDataPorts(cfg *config.Sandbox) bool {
	return cfg.Driver == config.QEMU && isLocal(cfg.URI) && cfg.Service == nil
}

// usesDataPorts tells whether the program's stdio goes through the data
// ports (console.HostPorts): when the machine has them and the program
// runs on pipes.
func (r *run) usesDataPorts() bool { return hasDataPorts(r.cfg) && !r.cfg.TTY }

// dialDataPorts connects to the data ports' sockets, once the guest has
// opened its ends (console.Host.DialPorts).
func (r *run) dialDataPorts() (*console.HostPorts, error) {
	var conns []*net.UnixConn
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	for i := range guest.DataPorts {
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: dataSocket(r.stateDir, i), Net: "unix"})
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("opening the sandbox's stdio ports: %w", err)
		}
		conns = append(conns, c)
	}
	return &console.HostPorts{Stdin: conns[0], Stdout: conns[1], Stderr: conns[2], Close: closeAll}, nil
}

// stdioHandover prepares the handover of the caller's stdio on a socket in
// the config share. The caller's own descriptors are handed over where they
// are files and not terminals (a terminal would let the program type into
// the caller's shell with TIOCSTI): the program then reads and writes them
// itself. Anything else gets a pipe, copied here. finish, after the
// program's exit, closes what was handed over and waits for the copies to
// drain.
func (r *run) stdioHandover(channel int) (h *console.Handover, finish func(), err error) {
	name := fmt.Sprintf("stdio%d.sock", channel)
	path := filepath.Join(r.stateDir, name)
	os.Remove(path)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("stdio socket: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	h = &console.Handover{Listener: ln, Name: name, Timeout: r.startDeadline()}
	p := &handedPipes{}
	defer func() {
		if err != nil {
			ln.Close()
			p.close()
		}
	}()
	if h.Files[0], err = p.input(r.io.Stdin); err != nil {
		return nil, nil, err
	}
	for i, w := range []io.Writer{r.io.Stdout, r.io.Stderr} {
		if h.Files[i+1], err = p.output(w); err != nil {
			return nil, nil, err
		}
	}
	return h, p.finish, nil
}

// handedPipes are the pipes handed over in place of the caller's stdio
// where it cannot go as it is, and the copies between them and the caller.
type handedPipes struct {
	// given are the ends handed over, which the launcher closes.
	given  []*os.File
	copies sync.WaitGroup
}

// input is what the program gets for the caller's stdin.
func (p *handedPipes) input(stdin io.Reader) (*os.File, error) {
	if f, ok := handable(stdin); ok {
		return f, nil
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	p.given = append(p.given, pr)
	// Not awaited: the caller's stdin may never end.
	go func() {
		if stdin != nil {
			io.Copy(pw, stdin)
		}
		pw.Close()
	}()
	return pr, nil
}

// output is what the program gets for the caller's w.
func (p *handedPipes) output(w io.Writer) (*os.File, error) {
	if f, ok := handable(w); ok {
		return f, nil
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	p.given = append(p.given, pw)
	p.copies.Go(func() {
		io.Copy(w, pr)
		// Also when the caller's end broke: the program gets SIGPIPE.
		pr.Close()
	})
	return pw, nil
}

func (p *handedPipes) close() {
	for _, f := range p.given {
		f.Close()
	}
}

// finish, after the program's exit, closes what was handed over and
// waits a while for the copies of its output to drain.
func (p *handedPipes) finish() {
	p.close()
	drained := make(chan struct{})
	go func() {
		p.copies.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-time.After(stopTimeout):
	}
}

// handable is v as a file to hand over as it is: a file that is not a
// terminal.
func handable(v any) (*os.File, bool) {
	f, ok := v.(*os.File)
	if !ok || f == nil || term.IsTerminal(int(f.Fd())) {
		return nil, false
	}
	return f, true
}
