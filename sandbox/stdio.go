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
	var given []*os.File
	var copies sync.WaitGroup
	defer func() {
		if err != nil {
			ln.Close()
			for _, f := range given {
				f.Close()
			}
		}
	}()
	if f, ok := handable(r.io.Stdin); ok {
		h.Files[0] = f
	} else {
		pr, pw, err := os.Pipe()
		if err != nil {
			return nil, nil, err
		}
		h.Files[0], given = pr, append(given, pr)
		// Not awaited: the caller's stdin may never end.
		go func() {
			if r.io.Stdin != nil {
				io.Copy(pw, r.io.Stdin)
			}
			pw.Close()
		}()
	}
	for i, w := range []io.Writer{r.io.Stdout, r.io.Stderr} {
		if f, ok := handable(w); ok {
			h.Files[i+1] = f
			continue
		}
		pr, pw, err := os.Pipe()
		if err != nil {
			return nil, nil, err
		}
		h.Files[i+1], given = pw, append(given, pw)
		copies.Add(1)
		go func() {
			defer copies.Done()
			if _, err := io.Copy(w, pr); err != nil {
				// The caller's end broke: the program gets SIGPIPE.
				pr.Close()
				return
			}
			pr.Close()
		}()
	}
	finish = func() {
		for _, f := range given {
			f.Close()
		}
		drained := make(chan struct{})
		go func() {
			copies.Wait()
			close(drained)
		}()
		select {
		case <-drained:
		case <-time.After(stopTimeout):
		}
	}
	return h, finish, nil
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
