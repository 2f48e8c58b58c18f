package images

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// RootImage is the image's flattened root as a read-only squashfs
// filesystem image (rootfs/<hex>.squashfs), made once per image digest:
// the form a remote host gets a root in, one file to upload and attach
// as a disk. The caller holds the root as RootFS does, until Close.
//
// squashfs with zstd at level 1, measured here on a 54 MB tree (2 busy
// cores): 0.2 to 0.8 s and 16.8 MB, where zstd's default level took 13 s
// for 13.7 MB, gzip 20 s for 15.2 MB, lz4 0.2 s for 22.9 MB, and erofs
// (Debian 12's mkfs.erofs has lz4 only) 1.5 s for 27.9 MB or 0.5 s and
// 52 MB uncompressed. Every Debian kernel reads squashfs with zstd, and
// squashfs-tools is the set-up's already.
func (s *Store) RootImage(img *Image) (string, error) {
	dir, err := s.RootFS(img)
	if err != nil {
		return "", err
	}
	path := dir + ".squashfs"
	if isSquashfs(path) {
		return path, nil
	}
	tmp, err := os.MkdirTemp(filepath.Join(s.Dir, "tmp"), "squashfs-")
	if err != nil {
		return "", fmt.Errorf("root image of %s: %w", img.Ref, oneLine(s.storeError(err)))
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "root.squashfs")
	cmd := exec.Command("mksquashfs", dir, out, "-noappend", "-quiet", "-no-progress", "-comp", "zstd", "-Xcompression-level", "1")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("root image of %s: mksquashfs: %v: %s", img.Ref, err, bytes.TrimSpace(msg))
	}
	if err := syncFile(out); err != nil {
		return "", fmt.Errorf("root image of %s: %w", img.Ref, oneLine(s.storeError(err)))
	}
	// Whole or not at all: concurrent builders rename the same content.
	if err := os.Rename(out, path); err != nil {
		return "", fmt.Errorf("root image of %s: %w", img.Ref, oneLine(s.storeError(err)))
	}
	return path, nil
}

// isSquashfs tells a whole squashfs image: its magic, and at least the
// bytes its superblock says it uses.
func isSquashfs(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var sb [48]byte
	if _, err := f.ReadAt(sb[:], 0); err != nil || string(sb[:4]) != "hsqs" {
		return false
	}
	used := int64(0)
	for i := 7; i >= 0; i-- {
		used = used<<8 | int64(sb[40+i])
	}
	fi, err := f.Stat()
	return err == nil && fi.Size() >= used
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
