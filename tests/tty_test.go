package tests

import (
	"bufio"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
)

// TestTerminal runs the launcher on a pty as a user at a terminal would: the
// program gets a terminal of the caller's size, and a resize reaches it.
func TestTerminal(t *testing.T) {
	onEachDriver(t, func(t *testing.T, uri string) {
		cmd := exec.Command(launcher, "-c", uri, "/bin/sh", "-c",
			`tty; stty size; trap 'stty size; exit 5' WINCH; echo ready; while :; do sleep 0.1; done`)
		f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 30, Cols: 100})
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		lines := make(chan string, 16)
		go func() {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				lines <- strings.TrimRight(sc.Text(), "\r")
			}
			close(lines)
		}()
		next := func() string {
			select {
			case l, ok := <-lines:
				if !ok {
					return "<EOF>"
				}
				return l
			case <-time.After(2 * time.Minute):
				t.Fatal("no output from the sandbox within 2 minutes")
			}
			return ""
		}
		if got := next(); !strings.HasPrefix(got, "/dev/pts/") {
			t.Errorf("tty printed %q, want /dev/pts/N", got)
		}
		if got := next(); got != "30 100" {
			t.Errorf("stty size = %q, want %q", got, "30 100")
		}
		if got := next(); got != "ready" {
			t.Fatalf("got %q, want ready", got)
		}
		if err := pty.Setsize(f, &pty.Winsize{Rows: 40, Cols: 120}); err != nil {
			t.Fatal(err)
		}
		// The launcher hears SIGWINCH when the pty it runs on is resized.
		if got := next(); got != "40 120" {
			t.Errorf("stty size after resize = %q, want %q", got, "40 120")
		}
		go io.Copy(io.Discard, f)
		err = cmd.Wait()
		if code := cmd.ProcessState.ExitCode(); code != 5 {
			t.Errorf("exit status %d (%v), want 5", code, err)
		}
	})
}
