package fsimage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// imageSize is large enough for every magic (btrfs sits at 65600), so a
// missing magic is told apart from a short file.
const imageSize = 1 << 20

// sparseImage writes a sparse file of size bytes holding the given bytes at
// their offsets: a synthetic image with nothing but a superblock's magic.
func sparseImage(t *testing.T, size int64, at map[int64][]byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "image")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for off, b := range at {
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

func writeFile(t *testing.T, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "image")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDetectRaw(t *testing.T) {
	for _, tt := range []struct {
		name string
		at   map[int64][]byte
		want string
	}{
		{"ext4", map[int64][]byte{1080: {0x53, 0xef}}, "ext4"},
		{"xfs", map[int64][]byte{0: []byte("XFSB")}, "xfs"},
		{"btrfs", map[int64][]byte{65600: []byte("_BHRfS_M")}, "btrfs"},
		{"squashfs", map[int64][]byte{0: []byte("hsqs")}, "squashfs"},
		{"iso9660", map[int64][]byte{32769: []byte("CD001")}, "iso9660"},
		{"vfat FAT32", map[int64][]byte{82: []byte("FAT32   ")}, "vfat"},
		{"vfat FAT16", map[int64][]byte{54: []byte("FAT16   ")}, "vfat"},
		{"vfat FAT12", map[int64][]byte{54: []byte("FAT12   ")}, "vfat"},
		// The magic of big-endian ext4 is not ext4's: the kernel would
		// not mount it.
		{"ext4 byte-swapped", map[int64][]byte{1080: {0xef, 0x53}}, ""},
		// Off by one byte is no superblock.
		{"xfs at 1", map[int64][]byte{1: []byte("XFSB")}, ""},
		{"FAT32 label at 54", map[int64][]byte{54: []byte("FAT32   ")}, ""},
		{"zeros", nil, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := sparseImage(t, imageSize, tt.at)
			for _, format := range []string{"", "raw"} {
				got, err := Detect(path, format)
				if tt.want == "" {
					if !errors.Is(err, ErrUnknown) {
						t.Errorf("Detect(%s, %q) = %q, %v, want %v", tt.name, format, got, err, ErrUnknown)
					}
					continue
				}
				if err != nil || got != tt.want {
					t.Errorf("Detect(%s, %q) = %q, %v, want %q", tt.name, format, got, err, tt.want)
				}
			}
			if got, err := Format(path); err != nil || got != "raw" {
				t.Errorf("Format(%s) = %q, %v, want raw", tt.name, got, err)
			}
		})
	}
}

// TestDetectShort checks that files too short for some magics are read for
// the others, and that those too short for any are unknown, not an I/O error.
func TestDetectShort(t *testing.T) {
	for _, tt := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, ""},
		{"3 bytes", []byte("XFS"), ""},
		{"xfs magic only", []byte("XFSB"), "xfs"},
		{"squashfs magic only", []byte("hsqs"), "squashfs"},
		{"ext4 ends at the magic", append(make([]byte, 1080), 0x53, 0xef), "ext4"},
		{"ext4 magic cut", append(make([]byte, 1080), 0x53), ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Detect(writeFile(t, tt.data), "")
			if tt.want == "" {
				if !errors.Is(err, ErrUnknown) {
					t.Errorf("Detect(%s) = %q, %v, want %v", tt.name, got, err, ErrUnknown)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("Detect(%s) = %q, %v, want %q", tt.name, got, err, tt.want)
			}
		})
	}
}

func TestDetectMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none")
	if got, err := Detect(path, ""); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Detect(missing) = %q, %v, want %v", got, err, fs.ErrNotExist)
	}
	if got, err := Format(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Format(missing) = %q, %v, want %v", got, err, fs.ErrNotExist)
	}
}

// qcow2Image builds a qcow2 image (version 3, no refcounts: the reader does
// not use them) of clusters of 1<<bits bytes whose guest view holds the
// given bytes at their offsets; each must lie within one cluster. The L1
// table holds l1Size entries, enough for the highest offset.
func qcow2Image(t testing.TB, bits uint32, at map[int64][]byte) []byte {
	t.Helper()
	csize := int64(1) << bits
	l2Entries := csize / 8
	var l1Size int64
	for off := range at {
		l1Size = max(l1Size, off/(csize*l2Entries)+1)
	}
	if 8*l1Size > csize {
		t.Fatalf("qcow2Image: L1 of %d entries does not fit a cluster", l1Size)
	}
	img := make([]byte, 2*csize) // header, L1
	be := binary.BigEndian
	copy(img, "QFI\xfb")
	be.PutUint32(img[4:], 3)
	be.PutUint32(img[20:], bits)
	be.PutUint64(img[24:], uint64(l1Size*csize*l2Entries))
	be.PutUint32(img[36:], uint32(l1Size))
	be.PutUint64(img[40:], uint64(csize))
	alloc := func() int64 {
		off := int64(len(img))
		img = append(img, make([]byte, csize)...)
		return off
	}
	// Bit 63 (copied: refcount is 1) is set on every entry, as qemu does,
	// so the reader must mask it off.
	const copied = 1 << 63
	l2s := map[int64]int64{}
	data := map[int64]int64{}
	for off, b := range at {
		if off/csize != (off+int64(len(b))-1)/csize {
			t.Fatalf("qcow2Image: %d bytes at %d cross a cluster", len(b), off)
		}
		i1 := off / (csize * l2Entries)
		l2, ok := l2s[i1]
		if !ok {
			l2 = alloc()
			l2s[i1] = l2
			be.PutUint64(img[csize+8*i1:], uint64(l2)|copied)
		}
		c, ok := data[off/csize]
		if !ok {
			c = alloc()
			data[off/csize] = c
			be.PutUint64(img[l2+8*(off/csize%l2Entries):], uint64(c)|copied)
		}
		copy(img[c+off%csize:], b)
	}
	return img
}

func TestDetectQcow2Synthetic(t *testing.T) {
	for _, tt := range []struct {
		name string
		bits uint32
		at   map[int64][]byte
		want string
	}{
		{"ext4, 64 KiB clusters", 16, map[int64][]byte{1080: {0x53, 0xef}}, "ext4"},
		{"squashfs, 64 KiB clusters", 16, map[int64][]byte{0: []byte("hsqs")}, "squashfs"},
		// With 512-byte clusters an L2 table maps 32 KiB: the btrfs magic
		// is in the third, the iso9660 one in the second.
		{"btrfs, 512 B clusters", 9, map[int64][]byte{65600: []byte("_BHRfS_M")}, "btrfs"},
		{"iso9660, 512 B clusters", 9, map[int64][]byte{32769: []byte("CD001")}, "iso9660"},
		{"vfat, 512 B clusters", 9, map[int64][]byte{82: []byte("FAT32   ")}, "vfat"},
		// Clusters before the magic's are unallocated and read as zeros.
		{"btrfs after unknown data, 2 MiB clusters", 21, map[int64][]byte{65600: []byte("_BHRfS_M")}, "btrfs"},
		{"no magic", 16, map[int64][]byte{4096: []byte("data")}, ""},
		// "XFSB" in the host file's second cluster is not at guest 0.
		{"magic in the host file only", 9, map[int64][]byte{512: []byte("XFSB")}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, qcow2Image(t, tt.bits, tt.at))
			if got, err := Format(path); err != nil || got != "qcow2" {
				t.Errorf("Format(%s) = %q, %v, want qcow2", tt.name, got, err)
			}
			for _, format := range []string{"", "qcow2"} {
				got, err := Detect(path, format)
				if tt.want == "" {
					if !errors.Is(err, ErrUnknown) {
						t.Errorf("Detect(%s, %q) = %q, %v, want %v", tt.name, format, got, err, ErrUnknown)
					}
					continue
				}
				if err != nil || got != tt.want {
					t.Errorf("Detect(%s, %q) = %q, %v, want %q", tt.name, format, got, err, tt.want)
				}
			}
		})
	}
}

// TestDetectFormatMismatch checks that a format given on the command line
// is held against the content: mounting a qcow2 as raw would show the
// guest its header, and a raw image as qcow2 would not start.
func TestDetectFormatMismatch(t *testing.T) {
	raw := sparseImage(t, imageSize, map[int64][]byte{1080: {0x53, 0xef}})
	qcow := writeFile(t, qcow2Image(t, 16, map[int64][]byte{1080: {0x53, 0xef}}))
	for _, tt := range []struct {
		name, path, format, want string
	}{
		{"raw as qcow2", raw, "qcow2", "not a qcow2 image"},
		{"qcow2 as raw", qcow, "raw", "a qcow2 image given as raw"},
	} {
		got, err := Detect(tt.path, tt.format)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Detect(%s, %q) = %q, %v, want an error containing %q", tt.name, tt.format, got, err, tt.want)
		}
	}
}

// TestDetectQcow2Refused checks the qcow2 images the reader does not
// follow are refused with a reason rather than misread.
func TestDetectQcow2Refused(t *testing.T) {
	be := binary.BigEndian
	base := func() []byte { return qcow2Image(t, 16, map[int64][]byte{1080: {0x53, 0xef}}) }
	for _, tt := range []struct {
		name   string
		change func(img []byte) []byte
		want   string
	}{
		{"backing file", func(img []byte) []byte {
			be.PutUint64(img[8:], 512)
			be.PutUint32(img[16:], 4)
			copy(img[512:], "base")
			return img
		}, "backing file"},
		{"encrypted", func(img []byte) []byte { be.PutUint32(img[32:], 1); return img }, "encrypted"},
		{"cluster bits 8", func(img []byte) []byte { be.PutUint32(img[20:], 8); return img }, "cluster bits"},
		{"cluster bits 22", func(img []byte) []byte { be.PutUint32(img[20:], 22); return img }, "cluster bits"},
		// Bounded so that a corrupt header cannot make Detect allocate
		// gigabytes.
		{"L1 over 1<<20 entries", func(img []byte) []byte { be.PutUint32(img[36:], 1<<20+1); return img }, "L1 table of"},
		{"L1 past the end", func(img []byte) []byte { be.PutUint64(img[40:], 1<<40); return img }, "L1 table"},
		{"L1 at a negative offset", func(img []byte) []byte { be.PutUint64(img[40:], 1<<63); return img }, "L1 table"},
		{"header cut", func(img []byte) []byte { return img[:47] }, "qcow2 header"},
		{"compressed cluster", func(img []byte) []byte {
			// The data cluster's L2 entry is the L2 table's first.
			l2 := int64(be.Uint64(img[1<<16:]) & qcow2OffsetMask)
			e := be.Uint64(img[l2:])
			be.PutUint64(img[l2:], e|1<<62)
			return img
		}, "compressed"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, tt.change(base()))
			got, err := Detect(path, "")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Detect(%s) = %q, %v, want an error containing %q", tt.name, got, err, tt.want)
			}
		})
	}
}

// needTools skips the test unless the host can make real images.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			for _, dir := range []string{"/usr/sbin", "/sbin"} {
				if _, err := os.Stat(filepath.Join(dir, tool)); err == nil {
					t.Setenv("PATH", os.Getenv("PATH")+":"+dir)
					break
				}
			}
		}
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found: %v", tool, err)
		}
	}
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// TestDetectQcow2Real converts a real ext4 image with qemu-img, whose
// layout (refcounts, L2 tables, unallocated zero clusters) the synthetic
// images only approximate, and reads back its whole guest view: with 4 KiB
// clusters an L2 table maps 2 MiB, so 16 MiB takes eight.
func TestDetectQcow2Real(t *testing.T) {
	needTools(t, "mkfs.ext4", "qemu-img")
	dir := t.TempDir()
	raw := filepath.Join(dir, "raw.img")
	f, err := os.Create(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(16 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	run(t, "mkfs.ext4", "-q", "-F", raw)
	// Data beyond the metadata, so that more than the first L2 table maps
	// allocated clusters.
	want, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	for off := 3 << 20; off < len(want); off += 5 << 20 {
		copy(want[off:], bytes.Repeat([]byte("virt-sandbox"), 1000))
	}
	if err := os.WriteFile(raw, want, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := Detect(raw, ""); err != nil || got != "ext4" {
		t.Fatalf("Detect(raw ext4) = %q, %v, want ext4", got, err)
	}
	for _, tt := range []struct {
		name string
		opts []string
	}{
		{"default clusters", nil},
		{"4 KiB clusters", []string{"-o", "cluster_size=4096"}},
		{"512 B clusters, compat 0.10", []string{"-o", "cluster_size=512,compat=0.10"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			q := filepath.Join(t.TempDir(), "image.qcow2")
			args := append([]string{"convert", "-O", "qcow2"}, tt.opts...)
			run(t, "qemu-img", append(args, raw, q)...)
			for _, format := range []string{"", "qcow2"} {
				if got, err := Detect(q, format); err != nil || got != "ext4" {
					t.Errorf("Detect(qcow2 ext4, %q) = %q, %v, want ext4", format, got, err)
				}
			}
			if got, err := Format(q); err != nil || got != "qcow2" {
				t.Errorf("Format(qcow2) = %q, %v, want qcow2", got, err)
			}
			f, err := os.Open(q)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			r, err := openQcow2(f)
			if err != nil {
				t.Fatalf("openQcow2(%s) = %v", tt.name, err)
			}
			got := make([]byte, len(want))
			// Reads of odd sizes and offsets cross clusters.
			for off := 0; off < len(got); {
				n := min(len(got)-off, 12345)
				if k, err := r.ReadAt(got[off:off+n], int64(off)); err != nil || k != n {
					t.Fatalf("qcow2.ReadAt(%d bytes at %d) = %d, %v, want %d, nil", n, off, k, err, n)
				}
				off += n
			}
			if !bytes.Equal(got, want) {
				i := 0
				for got[i] == want[i] {
					i++
				}
				t.Errorf("qcow2 guest view differs from the raw image from byte %d", i)
			}
		})
	}
}

// TestQcow2ReadPastL1 checks that the guest view ends where the L1 table
// does, with io.EOF rather than zeros for ever.
func TestQcow2ReadPastL1(t *testing.T) {
	img := qcow2Image(t, 9, map[int64][]byte{0: []byte("hsqs")})
	r, err := openQcow2(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	// One L1 entry of 512-byte clusters maps 64 clusters: 32 KiB.
	buf := make([]byte, 8)
	if n, err := r.ReadAt(buf, 32<<10-4); err != io.EOF || n != 4 {
		t.Errorf("qcow2.ReadAt(8 bytes at 32 KiB - 4) = %d, %v, want 4, %v", n, err, io.EOF)
	}
}

// FuzzDetect checks that no file content, however corrupt, makes Detect
// panic or hang: it names a known filesystem or fails.
func FuzzDetect(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("XFSB"))
	f.Add([]byte("QFI\xfb"))
	f.Add(append(make([]byte, 1080), 0x53, 0xef))
	f.Add(qcow2Image(f, 9, map[int64][]byte{1080: {0x53, 0xef}}))
	f.Add(qcow2Image(f, 9, map[int64][]byte{65600: []byte("_BHRfS_M")}))
	known := map[string]bool{"ext4": true, "xfs": true, "btrfs": true, "squashfs": true, "iso9660": true, "vfat": true}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "image")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, format := range []string{"", "raw", "qcow2"} {
			got, err := Detect(path, format)
			if err == nil && !known[got] {
				t.Errorf("Detect(%x, %q) = %q, nil, want a known type or an error", data, format, got)
			}
			if err != nil && got != "" {
				t.Errorf("Detect(%x, %q) = %q, %v, want no type with an error", data, format, got, err)
			}
		}
		if got, err := Format(path); err != nil || (got != "raw" && got != "qcow2") {
			t.Errorf("Format(%x) = %q, %v, want raw or qcow2", data, got, err)
		}
	})
}
