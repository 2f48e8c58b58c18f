// Package kvm tells whether hardware virtualization really works on this
// host. /dev/kvm can exist and still hang: under some nested setups the
// firmware never gets past its start-up. So the check boots QEMU's own
// firmware under KVM and waits, under a time bound, for it to reach the
// point where it looks for something to boot. The answer is cached per boot
// of the host.
package kvm

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/virt-sandbox/virt-sandbox/sandbox/wholefile"
)

// Timeout bounds the probe: working KVM gets there in a fraction of it.
const Timeout = time.Second

// Emulator is the QEMU binary the probe runs.
const Emulator = "qemu-system-x86_64"

// Usable reports whether KVM boots a machine, probing at most once per host
// boot (the verdict is kept in cacheDir) and never for longer than Timeout.
// When it does not, reason says why.
func Usable(cacheDir string) (ok bool, reason string) {
	bootID, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	key := strings.TrimSpace(string(bootID))
	cache := filepath.Join(cacheDir, "kvm-probe")
	if b, err := os.ReadFile(cache); err == nil && key != "" {
		if id, verdict, found := strings.Cut(string(b), "\n"); found && id == key {
			return verdict == "ok", strings.TrimPrefix(verdict, "no: ")
		}
	}
	ok, reason = probe()
	verdict := "ok"
	if !ok {
		verdict = "no: " + reason
	}
	if os.MkdirAll(cacheDir, 0o755) == nil {
		// A verdict that cannot be kept (a full disk) is probed again
		// next time; a partial one is never left behind.
		wholefile.WriteBytes(cache, []byte(key+"\n"+verdict), 0o644)
	}
	return ok, reason
}

// bootReached are the firmware's debug messages that mean it ran through
// its start-up.
var bootReached = []string{"enter handle_19", "Booting from"}

// Device is KVM's device, which QEMU opens as its caller.
const Device = "/dev/kvm"

func probe() (bool, string) {
	if _, err := os.Stat(Device); err != nil {
		return false, "no " + Device
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	// The firmware's debug console (port 0x402) goes to stdout.
	cmd := exec.CommandContext(ctx, Emulator, "-accel", "kvm", "-nodefaults", "-display", "none",
		"-no-reboot", "-m", "16", "-chardev", "stdio,id=dbg", "-device", "isa-debugcon,iobase=0x402,chardev=dbg")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return false, err.Error()
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	// A QEMU stuck in the kernel may not die at once: do not wait long.
	cmd.WaitDelay = 100 * time.Millisecond
	if err := cmd.Start(); err != nil {
		return false, err.Error()
	}
	defer func() {
		cancel()
		cmd.Wait()
	}()
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		for _, s := range bootReached {
			if strings.Contains(sc.Text(), s) {
				return true, ""
			}
		}
	}
	if ctx.Err() != nil {
		return false, fmt.Sprintf("firmware under KVM did not start within %v", Timeout)
	}
	if msg := strings.TrimSpace(stderr.String()); msg != "" {
		return false, strings.Join(strings.Fields(msg), " ")
	}
	return false, "firmware under KVM stopped before booting"
}
