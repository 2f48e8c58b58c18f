package console

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
)

// WinSize is a terminal's size in characters.
type WinSize struct {
	Rows, Cols uint16
}

func (s WinSize) encode() []byte {
	b := binary.BigEndian.AppendUint16(nil, s.Rows)
	return binary.BigEndian.AppendUint16(b, s.Cols)
}

func decodeWinSize(t Type, p []byte) (WinSize, error) {
	if len(p) != 4 {
		return WinSize{}, fmt.Errorf("%w: %s payload has %d bytes, want 4", ErrFrame, t, len(p))
	}
	return WinSize{binary.BigEndian.Uint16(p), binary.BigEndian.Uint16(p[2:])}, nil
}

// Request is what a host asks of a sandbox that runs a service: to run
// another command beside it, or to stop it. One-shot sandboxes get none and
// run their configured program.
type Request struct {
	// Exec is a command to run with the service's identity and
	// environment, relayed like a one-shot program.
	Exec []string `json:"exec,omitempty"`
	// Stop asks the service's program to end (SIGTERM to its group), for
	// good: no restart.
	Stop bool `json:"stop,omitempty"`
	// Boot comes with the run's files to a service's sandbox that just
	// started on a remote host: it starts the service and answers.
	Boot bool `json:"boot,omitempty"`
	// Log asks for the program's output since the sandbox started, as
	// stdout; with Follow, also what is appended, until a signal.
	Log    bool `json:"log,omitempty"`
	Follow bool `json:"follow,omitempty"`
}

// hello is the host's opening frame: its version, whether the program gets
// a terminal and of which size, so the program starts with the right one,
// and then, as JSON after the fixed part, the request, if any, the socket
// of a stdio handover, if any, and whether the run's files follow.
type hello struct {
	Version uint32
	TTY     bool
	Size    WinSize
	Request *Request
	// StdioSocket names the socket in the config share where the host
	// hands over the program's stdio.
	StdioSocket string
	// Files tells that the run's files follow the hello in Files
	// frames, for a guest that shares no filesystem with the host.
	Files bool
	// DataPorts says that the program's stdio goes through the data
	// ports (data.go).
	DataPorts bool
}

// helloExtra is the JSON part of a hello.
type helloExtra struct {
	Request     *Request `json:"request,omitempty"`
	StdioSocket string   `json:"stdio_socket,omitempty"`
	Files       bool     `json:"files,omitempty"`
	DataPorts   bool     `json:"data_ports,omitempty"`
}

func (h hello) encode() []byte {
	b := binary.BigEndian.AppendUint32(nil, h.Version)
	b = append(b, h.Size.encode()...)
	var flags byte
	if h.TTY {
		flags |= 1
	}
	b = append(b, flags)
	if extra := (helloExtra{h.Request, h.StdioSocket, h.Files, h.DataPorts}); extra != (helloExtra{}) {
		// Strings cannot fail to marshal.
		j, _ := json.Marshal(extra)
		b = append(b, j...)
	}
	return b
}

func decodeHello(p []byte) (hello, error) {
	// Only the version is read from a short or long hello, so that the
	// mismatch can be reported whatever the peer's layout.
	if len(p) < 4 {
		return hello{}, fmt.Errorf("%w: hello payload has %d bytes, want at least 4", ErrFrame, len(p))
	}
	h := hello{Version: binary.BigEndian.Uint32(p)}
	if h.Version != Version {
		return h, nil
	}
	if len(p) < 9 {
		return hello{}, fmt.Errorf("%w: hello payload has %d bytes, want at least 9", ErrFrame, len(p))
	}
	h.Size, _ = decodeWinSize(Hello, p[4:8])
	h.TTY = p[8]&1 != 0
	if len(p) > 9 {
		var extra helloExtra
		if err := json.Unmarshal(p[9:], &extra); err != nil {
			return hello{}, fmt.Errorf("%w: hello request: %v", ErrFrame, err)
		}
		h.Request, h.StdioSocket, h.Files, h.DataPorts = extra.Request, extra.StdioSocket, extra.Files, extra.DataPorts
	}
	return h, nil
}

// Status is how the program ended.
type Status struct {
	Code   int // exit code when Signal is 0
	Signal int // the signal that killed it, or 0
}

// ExitCode is the status a shell would report: the code, or 128+signal.
func (s Status) ExitCode() int {
	if s.Signal != 0 {
		return 128 + s.Signal
	}
	return s.Code
}

func (s Status) encode() []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(int32(s.Code)))
	return binary.BigEndian.AppendUint32(b, uint32(s.Signal))
}

// encodeExit is Exit's payload: the status, and with data ports the counts
// of stdout and stderr bytes sent through them.
func encodeExit(s Status, n *counts) []byte {
	b := s.encode()
	if n != nil {
		b = binary.BigEndian.AppendUint64(b, n.stdout)
		b = binary.BigEndian.AppendUint64(b, n.stderr)
	}
	return b
}

func decodeExit(p []byte, ports bool) (Status, counts, error) {
	want := 8
	if ports {
		want = 24
	}
	if len(p) != want {
		return Status{}, counts{}, fmt.Errorf("%w: exit payload has %d bytes, want %d", ErrFrame, len(p), want)
	}
	st := Status{Code: int(int32(binary.BigEndian.Uint32(p))), Signal: int(binary.BigEndian.Uint32(p[4:]))}
	var n counts
	if ports {
		n = counts{binary.BigEndian.Uint64(p[8:]), binary.BigEndian.Uint64(p[16:])}
	}
	return st, n, nil
}

// Failed is a failure to run the program at all: the sandbox could not be set
// up (125), the command is not executable (126) or not found (127).
type Failed struct {
	Status  int
	Message string
}

func (f *Failed) Error() string { return f.Message }

func (f *Failed) encode() []byte {
	msg := strings.ReplaceAll(f.Message, "\n", " ")
	if len(msg) > MaxPayload-1 {
		msg = msg[:MaxPayload-1]
	}
	return append([]byte{byte(f.Status)}, msg...)
}

func decodeFailed(p []byte) (*Failed, error) {
	if len(p) < 1 {
		return nil, fmt.Errorf("%w: empty failure payload", ErrFrame)
	}
	return &Failed{Status: int(p[0]), Message: string(p[1:])}, nil
}
