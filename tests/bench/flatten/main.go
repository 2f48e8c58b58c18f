// Command flatten is the image-flattening benchmark of tests/bench.sh.
//
//	flatten -make FILE [-mb 200] [-layers 4]
//
// writes a docker-archive (as docker save does: uncompressed layers) of
// about that many MB of random files in that many layers: per layer many
// small files, some of a MB and one large one, in a few directories, and in
// the upper layers some whiteouts and overwrites of lower files.
//
//	flatten -archive FILE -store DIR
//
// opens a fresh image store in DIR, loads FILE into it (not timed), syncs,
// and prints how many seconds RootFS took to flatten the image: a cold
// root, as the first run of a freshly pulled image builds it.
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/virt-sandbox/virt-sandbox/images"
)

func main() {
	mk := flag.String("make", "", "write a docker-archive of random files to `FILE`")
	mb := flag.Int("mb", 200, "with -make: about this many MB of file content")
	layers := flag.Int("layers", 4, "with -make: this many layers")
	archive := flag.String("archive", "", "time flattening the image of docker-archive `FILE`")
	store := flag.String("store", "", "with -archive: a fresh image store `DIR`")
	flag.Parse()
	var err error
	switch {
	case *mk != "":
		err = makeArchive(*mk, *mb, *layers)
	case *archive != "" && *store != "":
		var d time.Duration
		d, err = timeRootFS(*archive, *store)
		if err == nil {
			fmt.Printf("%.3f\n", d.Seconds())
		}
	default:
		err = errors.New("usage: flatten -make FILE [-mb N] [-layers N] | flatten -archive FILE -store DIR")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "flatten:", err)
		os.Exit(1)
	}
}

func timeRootFS(archive, dir string) (time.Duration, error) {
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return 0, fmt.Errorf("%s is not empty: the store must be fresh", dir)
	}
	s, err := images.Open(dir)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	imgs, err := s.Load(context.Background(), archive)
	if err != nil {
		return 0, err
	}
	// What Load wrote must not be written back on RootFS's time.
	unix.Sync()
	start := time.Now()
	root, err := s.RootFS(imgs[0])
	d := time.Since(start)
	if err != nil {
		return 0, err
	}
	if _, err := os.Stat(filepath.Join(root, "l0")); err != nil {
		return 0, fmt.Errorf("the flattened root lacks l0: %w", err)
	}
	return d, nil
}

// makeArchive writes the layers to temporary files first: a tar header
// needs the size of the layer tar, and the config its digest.
func makeArchive(file string, mb, nlayers int) error {
	tmp, err := os.MkdirTemp(filepath.Dir(file), "flatten-make-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	rng := rand.New(rand.NewChaCha8([32]byte{1, 2, 3}))
	perLayer := int64(mb) << 20 / int64(nlayers)
	var diffIDs []string
	var paths []string
	for i := 0; i < nlayers; i++ {
		p := filepath.Join(tmp, fmt.Sprintf("layer%d.tar", i))
		d, err := writeLayer(p, i, perLayer, rng)
		if err != nil {
			return err
		}
		diffIDs = append(diffIDs, d)
		paths = append(paths, p)
	}
	cfg, err := json.Marshal(map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"created":      time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC),
		"config":       map[string]any{"Cmd": []string{"/bin/true"}},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	if err != nil {
		return err
	}
	sum := sha256.Sum256(cfg)
	cfgName := hex.EncodeToString(sum[:]) + ".json"
	var layerNames []string
	for _, d := range diffIDs {
		layerNames = append(layerNames, d[len("sha256:"):]+"/layer.tar")
	}
	manifest, err := json.Marshal([]map[string]any{{
		"Config": cfgName, "RepoTags": []string{"bench.invalid/flatten:latest"}, "Layers": layerNames,
	}})
	if err != nil {
		return err
	}

	f, err := os.Create(file)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	add := func(name string, size int64, r io.Reader) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: size, ModTime: time.Unix(1700000000, 0)}); err != nil {
			return err
		}
		_, err := io.Copy(tw, r)
		return err
	}
	for i, p := range paths {
		lf, err := os.Open(p)
		if err != nil {
			return err
		}
		fi, err := lf.Stat()
		if err == nil {
			err = add(layerNames[i], fi.Size(), lf)
		}
		lf.Close()
		if err != nil {
			return err
		}
	}
	for _, c := range []struct {
		name string
		b    []byte
	}{{cfgName, cfg}, {"manifest.json", manifest}} {
		if err := add(c.name, int64(len(c.b)), bytes.NewReader(c.b)); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}

// writeLayer writes layer i, about size bytes of content, and returns its
// diff ID: directory li/ with 40 subdirectories of small files (1-32 KiB,
// 95 % of the files), files of 256 KiB-1 MiB, and one file of an eighth of
// the layer; above layer 0 also a whiteout of a directory of the layer
// below and new content over some of its files.
func writeLayer(p string, i int, size int64, rng *rand.Rand) (string, error) {
	f, err := os.Create(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(f, h))
	mtime := time.Unix(1700000000, 0)
	dir := func(name string) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o755, ModTime: mtime})
	}
	file := func(name string, n int64) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: n, ModTime: mtime}); err != nil {
			return err
		}
		_, err := io.CopyN(tw, randReader{rng}, n)
		return err
	}
	top := fmt.Sprintf("l%d", i)
	if err := dir(top); err != nil {
		return "", err
	}
	for d := 0; d < 40; d++ {
		if err := dir(fmt.Sprintf("%s/d%02d", top, d)); err != nil {
			return "", err
		}
	}
	if i > 0 {
		below := fmt.Sprintf("l%d", i-1)
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: below + "/.wh.d00", Mode: 0o644, ModTime: mtime}); err != nil {
			return "", err
		}
		if err := dir(below + "/d01"); err != nil {
			return "", err
		}
		for k := 0; k < 50; k++ {
			if err := file(fmt.Sprintf("%s/d01/s%04d", below, k), 4096); err != nil {
				return "", err
			}
		}
	}
	left := size
	big := size / 8
	if err := file(top+"/big", big); err != nil {
		return "", err
	}
	left -= big
	for k := 0; left > 0; k++ {
		var n int64
		if rng.IntN(100) < 95 {
			n = 1024 + rng.Int64N(31*1024)
		} else {
			n = 256*1024 + rng.Int64N(768*1024)
		}
		n = min(n, left)
		kind := "s"
		if n >= 256*1024 {
			kind = "m"
		}
		if err := file(fmt.Sprintf("%s/d%02d/%s%04d", top, k%40, kind, k), n); err != nil {
			return "", err
		}
		left -= n
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), f.Close()
}

type randReader struct{ r *rand.Rand }

func (r randReader) Read(p []byte) (int, error) {
	for i := 0; i+8 <= len(p); i += 8 {
		v := r.r.Uint64()
		for j := 0; j < 8; j++ {
			p[i+j] = byte(v >> (8 * j))
		}
	}
	for i := len(p) &^ 7; i < len(p); i++ {
		p[i] = byte(r.r.Uint32())
	}
	return len(p), nil
}
