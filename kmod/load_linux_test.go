package kmod

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestLoadError(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string // "" for nil
	}{
		{nil, ""},
		{unix.EEXIST, ""},
		{fmt.Errorf("wrapped: %w", unix.EEXIST), ""},
		{unix.ENOEXEC, "kmod: loading virtio_blk: exec format error (invalid module format"},
		{unix.ENOENT, "kmod: loading virtio_blk: no such file or directory (unknown symbol"},
		{unix.EBUSY, "kmod: loading virtio_blk: device or resource busy"},
	} {
		err := loadError("virtio_blk", tt.err)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.want) || !errors.Is(err, tt.err)) {
			t.Errorf("loadError(virtio_blk, %v) = %v, want %q wrapping %v", tt.err, err, tt.want, tt.err)
		}
	}
}

// TestLoadGarbage checks the system call is wired up. The kernel rejects an
// image that is not ELF before doing anything else, and without privilege
// init_module fails with EPERM, so this is safe to run anywhere.
func TestLoadGarbage(t *testing.T) {
	err := Load("garbage", []byte("not an ELF image"), "")
	if err == nil || !strings.HasPrefix(err.Error(), "kmod: loading garbage: ") {
		t.Errorf("Load(garbage) = %v, want an error naming the module", err)
	}
}
