package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"libvirt.org/go/libvirt"
)

func TestBootFailure(t *testing.T) {
	for _, tt := range []struct {
		name, log, want string
	}{
		{
			name: "kernel panic",
			log: "[    0.000000] Linux version 6.1.0\n" +
				"[    1.234567] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n" +
				"[    1.234600] ---[ end Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0) ]---\n",
			want: "kernel panic: VFS: Unable to mount root fs on unknown-block(0,0)",
		},
		{
			// The panic says more than what the init said before dying.
			name: "panic after the init's complaint",
			log: "virt-sandbox-init: sandbox init: root: mount 9p sandbox-root: no such device\n" +
				"[    2.000000] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00007d00\n",
			want: "kernel panic: Attempted to kill init! exitcode=0x00007d00",
		},
		{
			name: "init complaint",
			log: "[    0.500000] virtio_pci 0000:00:02.0: enabling device\n" +
				"virt-sandbox-init: sandbox init: root: mount 9p sandbox-root on /newroot: no such device\n",
			want: "virt-sandbox-init: sandbox init: root: mount 9p sandbox-root on /newroot: no such device",
		},
		{
			// Debug lines report steps, not failures, even after one.
			name: "debug lines ignored",
			log: "virt-sandbox-init: [   0.100s] modules: 1.2ms\n" +
				"virt-sandbox-init: sandbox init: config: open /run/virt-sandbox/sandbox.json: no such file or directory\n" +
				"virt-sandbox-init: [   0.150s] config: 0.1ms\n",
			want: "virt-sandbox-init: sandbox init: config: open /run/virt-sandbox/sandbox.json: no such file or directory",
		},
		{
			name: "only debug lines",
			log:  "virt-sandbox-init: [ 0.1s] root: 3ms\nvirt-sandbox-init: [ 0.2s] config: 1ms\n",
			want: "",
		},
		{
			// The serial console ends lines with CRLF.
			name: "crlf",
			log:  "virt-sandbox-init: sandbox init: program: exec /bin/nope: no such file\r\n",
			want: "virt-sandbox-init: sandbox init: program: exec /bin/nope: no such file",
		},
		{
			name: "last complaint wins",
			log:  "virt-sandbox-init: first\nvirt-sandbox-init: second\n",
			want: "virt-sandbox-init: second",
		},
		{name: "nothing wrong", log: "[    0.000000] Linux version 6.1.0\nhello\n", want: ""},
		{name: "empty", log: "", want: ""},
	} {
		p := filepath.Join(t.TempDir(), consoleLog)
		if err := os.WriteFile(p, []byte(tt.log), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := bootFailure(p); got != tt.want {
			t.Errorf("bootFailure(%s) = %q, want %q", tt.name, got, tt.want)
		}
	}
	// No log at all: the machine never got as far as writing one.
	if got := bootFailure(filepath.Join(t.TempDir(), "missing.log")); got != "" {
		t.Errorf("bootFailure(missing file) = %q, want \"\"", got)
	}
}

func TestLibvirtError(t *testing.T) {
	le := libvirt.Error{
		Code:    libvirt.ERR_INTERNAL_ERROR,
		Domain:  libvirt.FROM_QEMU,
		Message: "internal error: process exited while connecting to monitor:\n  2024-01-01T00:00:00 qemu-system-x86_64: -kernel /k:\n\tPermission denied  ",
	}
	const want = "starting the sandbox: internal error: process exited while connecting to monitor: 2024-01-01T00:00:00 qemu-system-x86_64: -kernel /k: Permission denied"
	for _, tt := range []struct {
		name string
		err  error
	}{
		{"libvirt.Error", le},
		{"wrapped libvirt.Error", fmt.Errorf("create: %w", le)},
	} {
		if got := libvirtError("starting the sandbox", tt.err); got.Error() != want {
			t.Errorf("libvirtError(%s) = %q, want %q", tt.name, got, want)
		}
	}
	// Other errors are kept as they are, wrapped.
	other := errors.New("some error")
	if got := libvirtError("connecting", other); got.Error() != "connecting: some error" || !errors.Is(got, other) {
		t.Errorf("libvirtError(%v) = %v, want \"connecting: some error\" wrapping it", other, got)
	}
}
