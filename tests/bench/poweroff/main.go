// Command poweroff is the QEMU baseline's init: as PID 1 it powers the
// machine off at once, so a boot with it measures the kernel and QEMU and
// nothing else. Build it static (CGO_ENABLED=0).
//
// Run as "poweroff -cpio FILE", it writes a newc initramfs holding itself as
// /init instead.
package main

import (
	"fmt"
	"os"

	"github.com/cavaliergopher/cpio"
	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "-cpio" {
		if err := pack(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "poweroff:", err)
			os.Exit(1)
		}
		return
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "poweroff: not PID 1: refusing to power off (use -cpio FILE)")
		os.Exit(2)
	}
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		fmt.Fprintln(os.Stderr, "poweroff:", err)
		os.Exit(1)
	}
}

// pack writes an initramfs holding this program as /init.
func pack(dst string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	body, err := os.ReadFile(self)
	if err != nil {
		return err
	}
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	w := cpio.NewWriter(f)
	hdr := &cpio.Header{Name: "init", Mode: cpio.TypeReg | 0o755, Size: int64(len(body))}
	if err := w.WriteHeader(hdr); err != nil {
		f.Close()
		return err
	}
	if _, err := w.Write(body); err != nil {
		f.Close()
		return err
	}
	if err := w.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
