package console

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"testing"
)

// TestRequest runs whole sessions and checks that what the host asks of a
// service reaches the guest as asked, and that a one-shot host asks nothing
// (the guest then runs its configured program).
func TestRequest(t *testing.T) {
	for _, tt := range []struct {
		name string
		req  *Request
	}{
		{"none", nil},
		{"exec", &Request{Exec: []string{"ls", "-l"}}},
		{"stop", &Request{Stop: true}},
		{"boot", &Request{Boot: true}},
		{"log", &Request{Log: true, Follow: true}},
		{"exec with a terminal's bytes", &Request{Exec: []string{"sh", "-c", "echo \"é\" \x1b[0m\n\x00"}}},
		// Asking nothing is a request still: the guest refuses it
		// rather than run the service's program a second time.
		{"empty", &Request{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hc, gc := connPair(t)
			type acceptResult struct {
				req *Request
				err error
			}
			gres := make(chan acceptResult, 1)
			go func() {
				g, err := Accept(gc)
				if err != nil {
					gres <- acceptResult{nil, err}
					return
				}
				req := g.Request()
				gres <- acceptResult{req, g.Fail(&Failed{Status: 125, Message: "done"})}
			}()
			h := &Host{Request: tt.req}
			hr := within(t, "Host.Run", func() hostResult {
				st, err := h.Run(hc)
				return hostResult{st, err}
			})
			gr := within(t, "Accept+Guest.Request", func() acceptResult { return <-gres })
			if gr.err != nil {
				t.Fatalf("guest: %v", gr.err)
			}
			if !reflect.DeepEqual(gr.req, tt.req) {
				t.Errorf("Guest.Request() = %+v, want %+v", gr.req, tt.req)
			}
			var f *Failed
			if !errors.As(hr.err, &f) || f.Status != 125 {
				t.Errorf("Run() = %+v, %v, want the guest's failure", hr.st, hr.err)
			}
		})
	}
}

// TestRequestMalformed checks that a hello whose request is not the JSON of
// a Request is refused, not run as no request: a service's init must not
// take a garbled stop for a command, nor the reverse.
func TestRequestMalformed(t *testing.T) {
	fixed := hello{Version: Version, TTY: true, Size: WinSize{Rows: 24, Cols: 80}}.encode()
	for _, tt := range []struct {
		name string
		json string
	}{
		{"truncated", `{"request":{"exec":["ls"`},
		{"not JSON", "exec ls"},
		{"exec not a list", `{"request":{"exec":"ls"}}`},
		{"stop not a bool", `{"request":{"stop":"yes"}}`},
		{"request not an object", `{"request":["ls"]}`},
		{"stdio socket not a string", `{"stdio_socket":1}`},
		{"a list", `["ls"]`},
		{"trailing data", `{"request":{"stop":true}}{}`},
		{"NUL", "\x00"},
		{"spaces only", "  "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := append(bytes.Clone(fixed), tt.json...)
			if h, err := decodeHello(p); !errors.Is(err, ErrFrame) {
				t.Errorf("decodeHello(fixed part + %q) = %+v, %v, want %v", tt.json, h, err, ErrFrame)
			}
			hc, gc := connPair(t)
			types := fakeHost(t, hc, frames(Hello, p), true)
			type acceptResult struct {
				g   *Guest
				err error
			}
			ar := within(t, "Accept", func() acceptResult {
				g, err := Accept(gc)
				return acceptResult{g, err}
			})
			gc.Close()
			within(t, "the fake host", func() []Type { return <-types })
			if !errors.Is(ar.err, ErrFrame) {
				t.Errorf("Accept(hello with request %q) = %v, %v, want %v", tt.json, ar.g, ar.err, ErrFrame)
			}
		})
	}
}

func TestHelloRequestRoundTrip(t *testing.T) {
	for _, h := range []hello{
		{Version: Version, Request: &Request{Exec: []string{"ls", "-l"}}},
		{Version: Version, TTY: true, Size: WinSize{Rows: 24, Cols: 80}, Request: &Request{Stop: true}},
		{Version: Version, Request: &Request{Exec: []string{""}, Stop: true}},
		{Version: Version, Request: &Request{}},
		{Version: Version, StdioSocket: "stdio0.sock"},
		{Version: Version, Request: &Request{Exec: []string{"id"}}, StdioSocket: "stdio1.sock"},
	} {
		got, err := decodeHello(h.encode())
		if err != nil || !reflect.DeepEqual(got, h) {
			t.Errorf("decodeHello(%+v.encode()) = %+v, %v, want %+v, nil", h, got, err, h)
		}
	}
	// Unknown fields are those of a newer host of the same version: read
	// past, as encoding/json does.
	p := append(hello{Version: Version}.encode(), `{"request":{"stop":true,"later":1},"later":2}`...)
	if got, err := decodeHello(p); err != nil || got.Request == nil || !got.Request.Stop {
		t.Errorf("decodeHello(request with an unknown field) = %+v, %v, want a stop request", got, err)
	}
}

// sameHello compares hellos as the guest reads them: an empty command is
// no command, whether JSON said [] or nothing.
func sameHello(a, b hello) bool {
	if (a.Request == nil) != (b.Request == nil) {
		return false
	}
	if a.Request != nil && (a.Request.Stop != b.Request.Stop || !slices.Equal(a.Request.Exec, b.Request.Exec)) {
		return false
	}
	a.Request, b.Request = nil, nil
	return a == b
}

// FuzzDecodeHelloRequest checks decodeHello on hellos of this version with
// anything after the fixed part: refused with ErrFrame, or a request and a
// stdio socket that are what encoding/json makes of those bytes, and that
// encode back to the same fixed part.
func FuzzDecodeHelloRequest(f *testing.F) {
	f.Add(uint16(24), uint16(80), byte(1), []byte(nil))
	f.Add(uint16(0), uint16(0), byte(0), []byte(`{"request":{"exec":["ls","-l"]}}`))
	f.Add(uint16(1), uint16(2), byte(0xff), []byte(`{"request":{"stop":true}}`))
	f.Add(uint16(0), uint16(0), byte(0), []byte(`null`))
	f.Add(uint16(0), uint16(0), byte(0), []byte(`{"request":{"exec":["ls"`))
	f.Add(uint16(0), uint16(0), byte(0), []byte(`{"request":{"exec":[],"stop":false},"stdio_socket":"s"}`))
	f.Fuzz(func(t *testing.T, rows, cols uint16, flags byte, req []byte) {
		p := binary.BigEndian.AppendUint32(nil, Version)
		p = binary.BigEndian.AppendUint16(p, rows)
		p = binary.BigEndian.AppendUint16(p, cols)
		p = append(append(p, flags), req...)
		h, err := decodeHello(p)
		if err != nil {
			if !errors.Is(err, ErrFrame) {
				t.Errorf("decodeHello(%x) = %v, want %v", p, err, ErrFrame)
			}
			return
		}
		want := hello{Version: Version, TTY: flags&1 != 0, Size: WinSize{Rows: rows, Cols: cols}}
		if len(req) > 0 {
			var extra helloExtra
			if err := json.Unmarshal(req, &extra); err != nil {
				t.Fatalf("decodeHello(%x) = %+v, nil, but json.Unmarshal(%q) = %v", p, h, req, err)
			}
			want.Request, want.StdioSocket = extra.Request, extra.StdioSocket
		}
		if !sameHello(h, want) {
			t.Errorf("decodeHello(%x) = %+v, want %+v", p, h, want)
		}
		// Flags other than the terminal's are not kept.
		if e := h.encode(); !bytes.Equal(e[:8], p[:8]) || e[8] != flags&1 {
			t.Errorf("decodeHello(%x) = %+v, which encodes as %x", p, h, e)
		}
		// A decoded request encodes to JSON that decodes to itself.
		if again, err := decodeHello(h.encode()); err != nil || !sameHello(again, h) {
			t.Errorf("decodeHello(%+v.encode()) = %+v, %v, want it back", h, again, err)
		}
	})
}
