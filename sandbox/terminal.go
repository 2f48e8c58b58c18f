package sandbox

import (
	"io"
	"os"

	"golang.org/x/term"

	"github.com/virt-sandbox/virt-sandbox/sandbox/console"
)

// detachKey is Ctrl-], as in virsh console and telnet.
const detachKey = 0x1d

// terminal is the caller's terminal during a session: in raw mode when the
// program has a terminal too, so keys reach it as typed.
type terminal struct {
	fd     int
	state  *term.State
	stdin  io.Reader
	detach chan struct{}
}

func openTerminal(stdin io.Reader, tty bool) (*terminal, error) {
	t := &terminal{fd: -1, stdin: stdin, detach: make(chan struct{})}
	f, ok := stdin.(*os.File)
	if !tty || !ok || !term.IsTerminal(int(f.Fd())) {
		return t, nil
	}
	t.fd = int(f.Fd())
	st, err := term.MakeRaw(t.fd)
	if err != nil {
		return nil, err
	}
	t.state = st
	t.stdin = &detachReader{r: stdin, detach: t.detach}
	return t, nil
}

func (t *terminal) restore() {
	if t.state != nil {
		term.Restore(t.fd, t.state)
	}
}

func (t *terminal) size() console.WinSize {
	if t.fd < 0 {
		return console.WinSize{}
	}
	w, h, err := term.GetSize(t.fd)
	if err != nil {
		return console.WinSize{}
	}
	return console.WinSize{Rows: uint16(h), Cols: uint16(w)}
}

// detachReader passes keys through until Ctrl-], which it swallows and
// reports.
type detachReader struct {
	r      io.Reader
	detach chan struct{}
}

func (d *detachReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	for i := 0; i < n; i++ {
		if p[i] == detachKey {
			close(d.detach)
			return i, io.EOF
		}
	}
	return n, err
}
