// Package fsimage tells the filesystem inside an image file, raw or qcow2,
// from its superblock, so a sandbox mounts it with the right type (and a
// QEMU sandbox gets the right kernel module) instead of assuming ext4.
package fsimage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// ErrUnknown means no known filesystem was found in the image.
var ErrUnknown = errors.New("no known filesystem (ext2/3/4, xfs, btrfs, vfat, iso9660, squashfs)")

// magic is where a filesystem's signature sits and what it reads.
type magic struct {
	fstype string
	off    int64
	sig    []byte
}

var magics = []magic{
	{"ext4", 1080, []byte{0x53, 0xef}},
	{"xfs", 0, []byte("XFSB")},
	{"btrfs", 65600, []byte("_BHRfS_M")},
	{"squashfs", 0, []byte("hsqs")},
	{"iso9660", 32769, []byte("CD001")},
	{"vfat", 82, []byte("FAT32   ")},
	{"vfat", 54, []byte("FAT12   ")},
	{"vfat", 54, []byte("FAT16   ")},
}

// Detect returns the filesystem type of the image at path in format "raw",
// "qcow2" or "" (guess from the content). Types are the kernel's names, as
// mount(2) takes them.
func Detect(path, format string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var r io.ReaderAt = f
	head := make([]byte, 4)
	if _, err := f.ReadAt(head, 0); err != nil {
		return "", fmt.Errorf("%s: %w", path, ErrUnknown)
	}
	isQcow2 := bytes.Equal(head, []byte("QFI\xfb"))
	switch {
	case format == "qcow2" && !isQcow2:
		return "", fmt.Errorf("%s: not a qcow2 image", path)
	case format == "raw" && isQcow2:
		return "", fmt.Errorf("%s: a qcow2 image given as raw", path)
	case isQcow2:
		q, err := openQcow2(f)
		if err != nil {
			return "", fmt.Errorf("%s: %w", path, err)
		}
		r = q
	}
	buf := make([]byte, 8)
	for _, m := range magics {
		b := buf[:len(m.sig)]
		if _, err := r.ReadAt(b, m.off); err == nil && bytes.Equal(b, m.sig) {
			return m.fstype, nil
		}
	}
	return "", fmt.Errorf("%s: %w", path, ErrUnknown)
}

// Format returns "qcow2" or "raw" after the image's content.
func Format(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	head := make([]byte, 4)
	if n, _ := f.ReadAt(head, 0); n == 4 && bytes.Equal(head, []byte("QFI\xfb")) {
		return "qcow2", nil
	}
	return "raw", nil
}

// qcow2 reads the guest view of a qcow2 image: enough for superblocks.
type qcow2 struct {
	f           io.ReaderAt
	clusterBits uint32
	l1          []uint64
}

const qcow2OffsetMask = 0x00fffffffffffe00

func openQcow2(f io.ReaderAt) (*qcow2, error) {
	hdr := make([]byte, 48)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		return nil, fmt.Errorf("qcow2 header: %w", err)
	}
	be := binary.BigEndian
	if be.Uint64(hdr[8:]) != 0 {
		return nil, errors.New("qcow2 images with a backing file are not read")
	}
	if be.Uint32(hdr[32:]) != 0 {
		return nil, errors.New("encrypted qcow2 images are not read")
	}
	q := &qcow2{f: f, clusterBits: be.Uint32(hdr[20:])}
	if q.clusterBits < 9 || q.clusterBits > 21 {
		return nil, fmt.Errorf("qcow2 cluster bits %d out of range", q.clusterBits)
	}
	n := be.Uint32(hdr[36:])
	if n > 1<<20 {
		return nil, fmt.Errorf("qcow2 L1 table of %d entries", n)
	}
	l1 := make([]byte, 8*int(n))
	if _, err := f.ReadAt(l1, int64(be.Uint64(hdr[40:]))); err != nil {
		return nil, fmt.Errorf("qcow2 L1 table: %w", err)
	}
	for i := range n {
		q.l1 = append(q.l1, be.Uint64(l1[8*i:]))
	}
	return q, nil
}

// ReadAt reads guest bytes within one cluster at a time; unallocated
// clusters read as zeros.
func (q *qcow2) ReadAt(p []byte, off int64) (int, error) {
	done := 0
	for done < len(p) {
		o := uint64(off) + uint64(done)
		csize := uint64(1) << q.clusterBits
		inCluster := o & (csize - 1)
		n := min(uint64(len(p)-done), csize-inCluster)
		host, err := q.cluster(o)
		if err != nil {
			return done, err
		}
		if host == 0 {
			clear(p[done : done+int(n)])
		} else if _, err := q.f.ReadAt(p[done:done+int(n)], int64(host+inCluster)); err != nil {
			return done, err
		}
		done += int(n)
	}
	return done, nil
}

// cluster maps a guest offset to the host offset of its cluster.
func (q *qcow2) cluster(o uint64) (uint64, error) {
	l2Bits := q.clusterBits - 3
	i1 := o >> (q.clusterBits + l2Bits)
	if i1 >= uint64(len(q.l1)) {
		return 0, io.EOF
	}
	l2 := q.l1[i1] & qcow2OffsetMask
	if l2 == 0 {
		return 0, nil
	}
	i2 := (o >> q.clusterBits) & (1<<l2Bits - 1)
	var e [8]byte
	if _, err := q.f.ReadAt(e[:], int64(l2+8*i2)); err != nil {
		return 0, err
	}
	entry := binary.BigEndian.Uint64(e[:])
	if entry&(1<<62) != 0 {
		return 0, errors.New("compressed qcow2 clusters are not read")
	}
	return entry & qcow2OffsetMask, nil
}
