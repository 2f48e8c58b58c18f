package images

import (
	"bufio"
	"bytes"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// decompress returns r's content, decompressed if it starts with the magic
// number of gzip or zstd. Layers are sniffed rather than trusted by media
// type, because tools label uncompressed layers as gzip and the other way
// round.
func decompress(r io.Reader) (rc io.ReadCloser, compressed bool, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, _ := br.Peek(len(zstdMagic)) // a short stream is not compressed
	switch {
	case bytes.HasPrefix(magic, gzipMagic):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, true, err
		}
		return zr, true, nil
	case bytes.HasPrefix(magic, zstdMagic):
		// One goroutine: layers are read one after the other anyway.
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, true, err
		}
		return zr.IOReadCloser(), true, nil
	}
	return io.NopCloser(br), false, nil
}
