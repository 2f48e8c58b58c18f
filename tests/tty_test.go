package tests

import (
	"bufio"
	"io"
	"os/exec"
	"strings"
	"syscall"
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

// TestTerminalInputIsTyped checks that a program on a terminal reads only
// what was typed: nothing when nothing was, and an end of file for a Ctrl-D
// typed while the sandbox was starting, as script(1) sends when its own
// input ends. A line-editing terminal keeps that Ctrl-D as a NUL marker,
// which the launcher once passed on as input once it made its terminal raw:
// the program saw, and echoed, a ^@.
func TestTerminalInputIsTyped(t *testing.T) {
	onEachDriver(t, func(t *testing.T, uri string) {
		// A raw terminal shows any byte at all, in hex. --foreground
		// keeps timeout's child in the terminal's foreground group,
		// where reading the terminal does not stop it.
		out := onTerminal(t, "", uri, "/bin/sh", "-c",
			`stty raw -echo; timeout --foreground 2 dd bs=64 count=1 2>/dev/null | od -An -tx1; stty sane; echo done`)
		if out != "done\r\n" {
			t.Errorf("with nothing typed, the terminal showed %q, want %q", out, "done\r\n")
		}
		// dd exits 0 at an end of file, 124 (timeout's) still waiting.
		out = onTerminal(t, "\x04", uri, "/bin/sh", "-c",
			`timeout --foreground 60 dd bs=64 count=1 of=/tmp/in 2>/dev/null; echo "dd $?"; od -An -tx1 /tmp/in`)
		if out != "dd 0\r\n" {
			t.Errorf("with Ctrl-D typed at once, the terminal showed %q, want %q", out, "dd 0\r\n")
		}
	})
}

// onTerminal runs the launcher with args on a new pty, types typed on it at
// once, before the sandbox is up, and returns all the terminal showed.
func onTerminal(t *testing.T, typed string, uri string, args ...string) string {
	t.Helper()
	cmd := exec.Command(launcher, append([]string{"-c", uri, "--"}, args...)...)
	cmd.Dir = "/"
	f, err := pty.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.WriteString(f, typed); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() {
		// The pty's master reads EIO once the launcher is gone.
		b, _ := io.ReadAll(f)
		got <- b
	}()
	// SIGTERM, not SIGKILL: the launcher then destroys the sandbox itself.
	timer := time.AfterFunc(3*time.Minute, func() { cmd.Process.Signal(syscall.SIGTERM) })
	defer timer.Stop()
	if err := cmd.Wait(); err != nil {
		t.Errorf("launcher on a terminal: %v", err)
	}
	return string(<-got)
}
