package sandbox

import (
	"bytes"
	"io"
	"os"

	"golang.org/x/sys/unix"
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
	st, err := term.GetState(t.fd)
	if err != nil {
		return nil, err
	}
	typed, err := takeCanonicalInput(t.fd)
	if err != nil {
		term.Restore(t.fd, st)
		return nil, err
	}
	if _, err := term.MakeRaw(t.fd); err != nil {
		term.Restore(t.fd, st)
		return nil, err
	}
	t.state = st
	t.stdin = &detachReader{r: io.MultiReader(bytes.NewReader(typed), stdin), detach: t.detach}
	return t, nil
}

// takeCanonicalInput reads what was typed before the terminal goes raw, in
// the terminal's own terms. A line-editing terminal keeps an end of file
// (Ctrl-D, or script(1) telling its input ended) as a marker byte, NUL; in
// raw mode that marker would be read as a NUL the user never typed. So
// Ctrl-D stops being special first, so none arrives as a marker from then
// on, then the lines and ends of file already queued are read, each end of
// file as the Ctrl-D it was, for the program's terminal to act on.
func takeCanonicalInput(fd int) ([]byte, error) {
	tio, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil || tio.Lflag&unix.ICANON == 0 {
		return nil, err
	}
	eof := tio.Cc[unix.VEOF]
	if eof == 0 {
		// Disabled already: there are no markers to take.
		return nil, nil
	}
	plain := *tio
	plain.Cc[unix.VEOF] = 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &plain); err != nil {
		return nil, err
	}
	var typed []byte
	buf := make([]byte, 4096)
	for inputPending(fd) {
		n, err := unix.Read(fd, buf)
		if err != nil {
			return nil, err
		}
		typed = append(typed, buf[:n]...)
		// A read ends at a line's end or at an end of file, which
		// also ends a line typed without a newline.
		if n == 0 || !endsLine(buf[n-1], tio) {
			typed = append(typed, eof)
		}
	}
	return typed, nil
}

// inputPending tells whether a read of fd returns at once.
func inputPending(fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0 && fds[0].Revents&unix.POLLIN != 0
}

// endsLine tells whether c ends a line of a canonical terminal.
func endsLine(c byte, tio *unix.Termios) bool {
	return c == '\n' || (c != 0 && (c == tio.Cc[unix.VEOL] || c == tio.Cc[unix.VEOL2]))
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
