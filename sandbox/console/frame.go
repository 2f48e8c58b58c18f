// Package console is the protocol spoken between the launcher on the host and
// the init inside the sandbox, over the sandbox's app channel (an LXC console
// or a QEMU virtio-serial port). Both ends use this package, so the frames have
// exactly one definition.
//
// A frame is 1 byte of type, 4 bytes of big-endian payload length and the
// payload (at most MaxPayload bytes).
package console

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Version is the protocol version exchanged in the handshake. Bump it whenever
// a frame changes meaning, so a stale init is refused instead of misread.
const Version = 5

// MaxPayload bounds a frame's payload, and so the memory either end commits to
// one frame.
const MaxPayload = 64 << 10

// Type identifies a frame.
type Type byte

// The frame types. Hello and Announce must keep their numbers and the layout
// of their first four payload bytes forever: they are how versions are
// compared.
//
// The guest speaks first: it repeats Announce until the host answers with
// Hello. The host must not write before, because the channel may be a pty
// that is not in raw mode yet and would echo and mangle the bytes; and
// what the guest writes before the host has opened the channel may be lost.
const (
	Hello    Type = 1  // host → guest: version u32, rows u16, cols u16, flags u8, optional JSON {request, stdio_socket, files}
	Announce Type = 2  // guest → host: version u32
	Stdin    Type = 3  // host → guest: bytes for the program's stdin
	StdinEOF Type = 4  // host → guest: the caller's stdin ended
	StdinAck Type = 5  // guest → host: u32 count of stdin bytes handed to the program
	Stdout   Type = 6  // guest → host
	Stderr   Type = 7  // guest → host
	Signal   Type = 8  // host → guest: u32 signal number for the program
	Winsize  Type = 9  // host → guest: rows u16, cols u16
	Exit     Type = 10 // guest → host: code i32, signal u32 (non-zero: killed by it)
	Failure  Type = 11 // guest → host: status u8, one-line message; the program did not run
	ExitAck  Type = 12 // host → guest: Exit or Failure received; the guest may end
	Files    Type = 13 // host → guest: bytes of the run's files, a tar stream (see files.go)
	FilesEnd Type = 14 // host → guest: the files are complete
	// PortsOpen: guest → host: the data ports are open in the guest; the
	// host connects to them now (see data.go).
	PortsOpen Type = 15
	// StdinReady: guest → host: the guest has seen the host connected to
	// the data ports; the host may now end the stdin port (see data.go).
	StdinReady Type = 16
)

func (t Type) String() string {
	names := [...]string{"", "hello", "announce", "stdin", "stdin-eof", "stdin-ack", "stdout", "stderr",
		"signal", "winsize", "exit", "failure", "exit-ack", "files", "files-end", "ports-open", "stdin-ready"}
	if int(t) < len(names) && t != 0 {
		return names[t]
	}
	return fmt.Sprintf("type(%d)", byte(t))
}

// ErrFrame is wrapped by errors about malformed frames.
var ErrFrame = errors.New("malformed console frame")

const headerLen = 5

// Writer writes frames; it is safe for concurrent use, so several pumps can
// share one channel.
type Writer struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
}

// NewWriter returns a Writer on w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write sends one frame. Payloads over MaxPayload are refused, not split:
// callers that stream data use WriteData.
func (w *Writer) Write(t Type, payload []byte) error {
	if len(payload) > MaxPayload {
		return fmt.Errorf("%w: %s payload of %d bytes exceeds %d", ErrFrame, t, len(payload), MaxPayload)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	// One write per frame: one system call, and a frame is never split
	// between two writers.
	w.buf = append(w.buf[:0], byte(t))
	w.buf = binary.BigEndian.AppendUint32(w.buf, uint32(len(payload)))
	w.buf = append(w.buf, payload...)
	_, err := w.w.Write(w.buf)
	return err
}

// WriteData sends p as as many frames of type t as needed.
func (w *Writer) WriteData(t Type, p []byte) error {
	for len(p) > 0 {
		n := min(len(p), MaxPayload)
		if err := w.Write(t, p[:n]); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// Reader reads frames.
type Reader struct {
	r   *bufio.Reader
	buf []byte
}

// NewReader returns a Reader on r.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, MaxPayload+headerLen), buf: make([]byte, MaxPayload)}
}

// Next returns the next frame. The payload is valid until the following call.
// A clean end of input between frames is io.EOF; inside a frame it is
// io.ErrUnexpectedEOF.
func (r *Reader) Next() (Type, []byte, error) {
	var hdr [headerLen]byte
	if _, err := io.ReadFull(r.r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > MaxPayload {
		return 0, nil, fmt.Errorf("%w: %s payload of %d bytes exceeds %d", ErrFrame, Type(hdr[0]), n, MaxPayload)
	}
	p := r.buf[:n]
	if _, err := io.ReadFull(r.r, p); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return Type(hdr[0]), p, nil
}

func putU32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func getU32(t Type, p []byte) (uint32, error) {
	if len(p) != 4 {
		return 0, fmt.Errorf("%w: %s payload has %d bytes, want 4", ErrFrame, t, len(p))
	}
	return binary.BigEndian.Uint32(p), nil
}
