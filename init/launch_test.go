package main

import (
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// TestStartUnprivileged starts unprivileged programs while other goroutines
// keep the runtime moving between threads, and checks that every program
// has an empty bounding set and no_new_privs, and that the threads left to
// the rest of the init keep theirs.
func TestStartUnprivileged(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("dropping capabilities needs root")
	}
	stop := make(chan struct{})
	var busy sync.WaitGroup
	for i := 0; i < 4; i++ {
		busy.Add(1)
		go func() {
			defer busy.Done()
			for {
				select {
				case <-stop:
					return
				default:
					syscall.Getpid()
					runtime.Gosched()
				}
			}
		}()
	}
	defer func() {
		close(stop)
		busy.Wait()
	}()
	for i := 0; i < 20; i++ {
		cmd := &exec.Cmd{Path: "/bin/grep", Args: []string{"grep", "-E", "^(CapBnd|NoNewPrivs):", "/proc/self/status"}}
		var out strings.Builder
		cmd.Stdout = &out
		l := &launch{Cmd: cmd, unprivileged: true}
		if err := l.start(); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatal(err)
		}
		if want := "CapBnd:\t0000000000000000\nNoNewPrivs:\t1\n"; out.String() != want {
			t.Fatalf("start %d: the program's status says %q, want %q", i, out.String(), want)
		}
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b, err := os.ReadFile("/proc/thread-self/status")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "NoNewPrivs:\t0") || strings.Contains(string(b), "CapBnd:\t0000000000000000") {
		t.Errorf("a thread of the starter lost its bounding set or got no_new_privs:\n%s", b)
	}
}
