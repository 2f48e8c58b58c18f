package console

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Stdio handover. Where the host and the guest share a filesystem (an LXC
// sandbox on this machine), the host hands the program's stdin, stdout and
// stderr to the guest as file descriptors instead of relaying them in
// frames: the program then reads and writes the caller's pipes or files
// itself, at their speed. The hello names a UNIX socket in the config share
// (its flag bit 2, and StdioSocket); the guest connects to it and receives
// one byte carrying, as SCM_RIGHTS, exactly three descriptors: stdin,
// stdout, stderr. The frames then carry only control: signals, stdin EOF
// (ignored), the exit and its acknowledgement. The socket takes one
// connection, and gives nothing but those three.

// Handover is the host's side of a stdio handover.
type Handover struct {
	// Listener is the socket the guest connects to; it is closed once the
	// descriptors are handed over.
	Listener *net.UnixListener
	// Name is the socket's name in the guest's config share.
	Name string
	// Files are stdin, stdout and stderr, in that order.
	Files [3]*os.File
	// Timeout bounds the wait for the guest to connect.
	Timeout time.Duration
}

// send waits for the guest to connect and hands it the files. A guest
// that cannot take them reports its failure in a frame.
func (h *Handover) send() error {
	defer h.Listener.Close()
	h.Listener.SetDeadline(time.Now().Add(h.Timeout))
	conn, err := h.Listener.AcceptUnix()
	if err != nil {
		return fmt.Errorf("console: handing over stdio: %w", err)
	}
	defer conn.Close()
	fds := make([]int, len(h.Files))
	for i, f := range h.Files {
		fds[i] = int(f.Fd())
	}
	if _, _, err := conn.WriteMsgUnix([]byte{1}, unix.UnixRights(fds...), nil); err != nil {
		return fmt.Errorf("console: handing over stdio: %w", err)
	}
	return nil
}

// ReceiveStdio is the guest's side of a handover: it connects to the
// socket at path and returns the program's stdin, stdout and stderr.
func ReceiveStdio(path string) ([3]*os.File, error) {
	var files [3]*os.File
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return files, fmt.Errorf("console: receiving stdio: %w", err)
	}
	defer conn.Close()
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(len(files)*4))
	_, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return files, fmt.Errorf("console: receiving stdio: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return files, errors.New("console: receiving stdio: no descriptors")
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != len(files) {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return files, fmt.Errorf("console: receiving stdio: %d descriptors, want %d", len(fds), len(files))
	}
	for i, fd := range fds {
		unix.CloseOnExec(fd)
		files[i] = os.NewFile(uintptr(fd), []string{"stdin", "stdout", "stderr"}[i])
	}
	return files, nil
}
