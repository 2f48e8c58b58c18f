package sandbox

import (
	"bytes"
	"errors"
	"io"
	"sync"

	"libvirt.org/go/libvirt"
)

// eventStream is a libvirt stream as an io.ReadWriteCloser, driven by
// libvirt's event loop instead of blocking calls.
//
// Why not blocking virStreamRecv: while the default event loop runs (domain
// events need it), a thread blocked in virStreamRecv is not always woken
// when the stream's data arrives; it stays asleep until the next message on
// the connection, which is the keepalive, 5 s later, and sometimes not even
// then. Seen here as LXC runs whose init had sent the exit and waited for
// the acknowledgement: a 5.0 s stall in about 1 run in 10 of `ls -la /`
// under -d, and now and then a hang; with the keepalive interval set to
// 1 s the stalls became exactly 1.0 s. virsh's console reads its stream
// the way this type does: from the stream's event callback, non-blocking.
type eventStream struct {
	st *libvirt.Stream

	mu   sync.Mutex
	cond *sync.Cond
	// received holds what the callback read and Read has not taken; the
	// callback stops asking for data while it holds streamBacklog bytes,
	// so a slow reader slows the sandbox instead of growing memory.
	received bytes.Buffer
	// end is io.EOF or the stream's error, reported once received drains.
	end       error
	writable  bool
	awaitSend bool
	closed    bool
	// events is the set the callback is registered for now.
	events libvirt.StreamEventType

	// sendMu makes writes whole: a frame never interleaves with another.
	sendMu sync.Mutex
}

// streamBacklog bounds what a stream holds for its reader.
const streamBacklog = 1 << 20

// streamChunk is the most one callback reads at once.
const streamChunk = 64 << 10

var errStreamClosed = errors.New("stream closed")

// openStream makes a non-blocking stream on conn and attaches it with open
// (a console or a channel of a domain).
func openStream(conn *libvirt.Connect, open func(*libvirt.Stream) error) (*eventStream, error) {
	st, err := conn.NewStream(libvirt.STREAM_NONBLOCK)
	if err != nil {
		return nil, err
	}
	if err := open(st); err != nil {
		st.Free()
		return nil, err
	}
	s := &eventStream{st: st, events: streamWatch}
	s.cond = sync.NewCond(&s.mu)
	if err := st.EventAddCallback(s.events, s.onEvent); err != nil {
		st.Abort()
		st.Free()
		return nil, err
	}
	return s, nil
}

// streamWatch are the events watched whatever else is asked for.
const streamWatch = libvirt.STREAM_EVENT_READABLE | libvirt.STREAM_EVENT_ERROR | libvirt.STREAM_EVENT_HANGUP

// wouldBlock tells a non-blocking stream's "try again" (virStreamRecv and
// virStreamSend return -2 and set no error).
func wouldBlock(err error) bool {
	var le libvirt.Error
	return errors.As(err, &le) && le.Code == libvirt.ERR_OK
}

// onEvent runs in the event loop: it reads what has arrived and wakes the
// reader and a waiting writer.
func (s *eventStream) onEvent(_ *libvirt.Stream, ev libvirt.StreamEventType) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if ev&libvirt.STREAM_EVENT_WRITABLE != 0 {
		s.writable = true
	}
	if ev&streamWatch != 0 && s.end == nil {
		s.receive(ev&(libvirt.STREAM_EVENT_ERROR|libvirt.STREAM_EVENT_HANGUP) != 0)
	}
	s.cond.Broadcast()
	s.updateEvents()
}

// receive reads one chunk; at a hang-up with nothing left to read, the
// stream has ended.
func (s *eventStream) receive(hangup bool) {
	var buf [streamChunk]byte
	n, err := s.st.Recv(buf[:])
	switch {
	case wouldBlock(err):
		if hangup {
			s.end = io.EOF
		}
	case err != nil:
		s.end = err
	default:
		s.received.Write(buf[:n])
	}
}

// updateEvents registers for what is wanted now: data while there is room
// for it, writability while a write waits. Called with mu held.
func (s *eventStream) updateEvents() {
	var want libvirt.StreamEventType
	if s.end == nil && s.received.Len() < streamBacklog {
		want |= streamWatch
	}
	if s.awaitSend {
		want |= libvirt.STREAM_EVENT_WRITABLE
	}
	if want != s.events && !s.closed {
		s.events = want
		s.st.EventUpdateCallback(want)
	}
}

func (s *eventStream) Read(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.received.Len() == 0 && s.end == nil && !s.closed {
		s.cond.Wait()
	}
	if s.received.Len() > 0 {
		n, _ := s.received.Read(p)
		s.updateEvents()
		return n, nil
	}
	if s.closed {
		return 0, errStreamClosed
	}
	return 0, s.end
}

func (s *eventStream) Write(p []byte) (int, error) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return 0, errStreamClosed
	}
	total := 0
	for total < len(p) {
		n, err := s.st.Send(p[total:])
		if wouldBlock(err) {
			if err := s.awaitWritable(); err != nil {
				return total, err
			}
			continue
		}
		if err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}

// awaitWritable waits for the stream to take more data.
func (s *eventStream) awaitWritable() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writable = false
	s.awaitSend = true
	s.updateEvents()
	for !s.writable && s.end == nil && !s.closed {
		s.cond.Wait()
	}
	s.awaitSend = false
	s.updateEvents()
	switch {
	case s.closed:
		return errStreamClosed
	case !s.writable:
		return s.end
	}
	return nil
}

// fail ends the stream with err: a Read or Write waiting on it returns.
// The stream cannot tell by itself that its connection is gone.
func (s *eventStream) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.end == nil {
		s.end = err
	}
	s.cond.Broadcast()
}

// Close detaches the stream from the event loop and releases it; a
// blocked Read or Write returns.
func (s *eventStream) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.cond.Broadcast()
	s.mu.Unlock()
	// A Write under way returns (it sees closed); later ones do not
	// touch the stream.
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.st.EventRemoveCallback()
	s.st.Abort()
	return s.st.Free()
}
