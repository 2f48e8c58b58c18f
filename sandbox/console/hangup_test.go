package console

import (
	"net"
	"testing"
	"time"
)

// TestAwaitHangup: the guest's wait for the host to close the channel
// ends when it does, and after the bound when it does not.
func TestAwaitHangup(t *testing.T) {
	for _, tt := range []struct {
		name    string
		hangUp  bool
		bound   time.Duration
		atLeast time.Duration
		atMost  time.Duration
	}{
		{"host closes", true, time.Minute, 0, 5 * time.Second},
		{"host stays", false, 200 * time.Millisecond, 200 * time.Millisecond, 5 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			host, guest := net.Pipe()
			defer host.Close()
			g := &Guest{r: NewReader(guest), w: NewWriter(guest)}
			if tt.hangUp {
				go func() {
					time.Sleep(10 * time.Millisecond)
					host.Close()
				}()
			}
			start := time.Now()
			g.AwaitHangup(tt.bound)
			if took := time.Since(start); took < tt.atLeast || took > tt.atMost {
				t.Errorf("AwaitHangup took %v, want %v to %v", took, tt.atLeast, tt.atMost)
			}
		})
	}
}
