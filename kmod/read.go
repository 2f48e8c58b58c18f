package kmod

import (
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// maxImageSize bounds a decompressed module so a corrupt or hostile file
// cannot exhaust the guest's memory. The largest real modules are tens of
// MiB. A variable so tests can lower it.
var maxImageSize int64 = 256 << 20

const maxZstdWindow = 256 << 20

// ReadModule returns the ELF image in the module file at path, decompressing
// it according to its suffix: .gz, .xz, .zst or none.
func ReadModule(path string) ([]byte, error) {
	name := Name(path)
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("kmod: %s: %w", name, err)
	}
	defer f.Close()

	var r io.Reader = f
	switch c := Compression(path); c {
	case "gz":
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("kmod: %s: decompressing %s: %w", name, path, err)
		}
		defer zr.Close()
		r = zr
	case "xz":
		xr, err := xz.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("kmod: %s: decompressing %s: %w", name, path, err)
		}
		r = xr
	case "zst":
		// One decoder goroutine, and no window larger than the largest
		// output we accept, keep memory use predictable in a small guest.
		zr, err := zstd.NewReader(f,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(maxZstdWindow))
		if err != nil {
			return nil, fmt.Errorf("kmod: %s: decompressing %s: %w", name, path, err)
		}
		defer zr.Close()
		r = zr
	default:
		if fi, err := f.Stat(); err == nil && fi.Size() > maxImageSize {
			return nil, tooLarge(name)
		}
	}

	b, err := io.ReadAll(io.LimitReader(r, maxImageSize+1))
	if err != nil {
		return nil, fmt.Errorf("kmod: %s: reading %s: %w", name, path, err)
	}
	if int64(len(b)) > maxImageSize {
		return nil, tooLarge(name)
	}
	return b, nil
}

func tooLarge(name string) error {
	return fmt.Errorf("kmod: %s: module image larger than %d MiB, refusing to load it", name, maxImageSize>>20)
}
