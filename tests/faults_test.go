package tests

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"
)

// The fault tests point the cache (VIRT_SANDBOX_CACHE_DIR), the state
// directory (VIRT_SANDBOX_STATE_DIR) and the image store (--store,
// VIRT_SANDBOX_IMAGE_STORE) at directories of their own, filled-up
// filesystems among them, so they never touch what other tests use.

// smallFS is a fresh ext4 filesystem of size bytes on a loop device,
// mounted on a fresh directory, and taken away when the test ends. Here
// libvirtd may run in a mount namespace of its own (tests/setup-host.sh),
// which would not see a mount of ours: the same device is mounted there
// too, at the same place, so that libvirt and QEMU see what we write.
func smallFS(t *testing.T, size int64) string {
	t.Helper()
	needTools(t, "mkfs.ext4", "losetup", "nsenter")
	dir := hostDir(t)
	img := filepath.Join(hostDir(t), "fs.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	host(t, "mkfs.ext4", "-q", "-m", "0", "-O", "^has_journal", img)
	loop := strings.TrimSpace(host(t, "losetup", "-f", "--show", img))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", loop).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", loop, err, out)
		}
	})
	mountIn := func(gone func() bool, ns ...string) {
		host(t, ns[0], append(ns[1:], "mount", loop, dir)...)
		t.Cleanup(func() {
			if gone() {
				return // the namespace went, and its mounts with it
			}
			if out, err := exec.Command(ns[0], append(ns[1:], "umount", dir)...).CombinedOutput(); err != nil {
				t.Errorf("umount %s: %v: %s", dir, err, out)
			}
		})
	}
	mountIn(func() bool { return false }, "env")
	// The system libvirtd's pid file: the stand-in remote host
	// (remote-host.sh) runs a second libvirtd.
	pidFile, err := os.ReadFile("/run/libvirtd.pid")
	if err != nil {
		t.Fatal(err)
	}
	pid := strings.TrimSpace(string(pidFile))
	theirs, _ := os.Readlink("/proc/" + pid + "/ns/mnt")
	ours, _ := os.Readlink("/proc/self/ns/mnt")
	if theirs != ours {
		// Another test may restart libvirtd meanwhile.
		gone := func() bool {
			now, _ := os.Readlink("/proc/" + pid + "/ns/mnt")
			return now != theirs
		}
		mountIn(gone, "nsenter", "-t", pid, "-m")
	}
	os.Remove(filepath.Join(dir, "lost+found"))
	os.Chmod(dir, 0o755)
	return dir
}

// fill leaves only free bytes free on dir's filesystem, with a file that
// release takes away again.
func fill(t *testing.T, dir string, free int64) (release func()) {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n := int64(st.Bavail)*st.Bsize - free; n > 0 {
		if err := unix.Fallocate(int(f.Fd()), 0, 0, n); err != nil {
			t.Fatalf("fallocate %d bytes in %s: %v", n, dir, err)
		}
	}
	return func() {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
}

// names lists dir's entries, "" for an empty or missing directory.
func names(dir string) string {
	ents, _ := os.ReadDir(dir)
	var n []string
	for _, e := range ents {
		n = append(n, e.Name())
	}
	return strings.Join(n, " ")
}

// checkOneLine is checkRefused that also makes sure the line names none
// of the files a store or cache keeps inside.
func checkOneLine(t *testing.T, r result, want string, internal ...string) {
	t.Helper()
	checkRefused(t, r, want)
	for _, s := range internal {
		if strings.Contains(r.stderr, s) {
			t.Errorf("the error names %s, which means nothing to the user: %s", s, r.stderr)
		}
	}
}

// zeroLayer holds /big, size zero bytes: a few kilobytes compressed, size
// bytes flattened.
func zeroLayer(t *testing.T, size int) v1.Layer {
	return layer(t, types.DockerLayer, fileEntry("big", string(make([]byte, size)), 0o644))
}

// TestImageStoreFull: a pull into a store whose filesystem is too small is
// refused up front, a flattening that fills it fails with one line; nothing
// half-written is left, and once there is room the same commands work and
// the root is whole.
func TestImageStoreFull(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	nonce := randomHex(t)
	const big = 8 << 20
	img := newImage(t, runtime.GOARCH, v1.Config{
		Entrypoint: []string{"/bin/sh", "-c"},
		Cmd:        []string{"wc -c </big; cat /etc/marker"},
		Env:        []string{"PATH=/bin"},
	}, baseLayer(t, types.DockerLayer), zeroLayer(t, big), markerLayer(t, types.DockerLayer, nonce))
	ref := fmt.Sprintf("%s/vsbtest/full-%s:1", reg.addr, nonce)
	push(t, ref, img)
	hexd := strings.TrimPrefix(digestOf(t, img), "sha256:")

	store := smallFS(t, 64<<20)
	release := fill(t, store, 256<<10)
	env := opts{env: []string{"VIRT_SANDBOX_IMAGE_STORE=" + store}}
	internal := []string{store + "/tmp", store + "/blobs", store + "/rootfs"}

	// Its layers cannot fit: refused before any is fetched.
	r := imageRun(t, opts{}, "--store", store, "pull", "--insecure", ref)
	t.Logf("pull into 256k: exit %d: %s", r.code, r.stderr)
	checkOneLine(t, r, "more than the", internal...)
	if got := names(filepath.Join(store, "blobs", "sha256")) + names(filepath.Join(store, "tmp")) + names(filepath.Join(store, "refs")); got != "" {
		t.Errorf("a refused pull left %q in the store", got)
	}

	// Room for the layers as the manifest gives their sizes, but not for
	// the files they are in: the pull passes the check and fails writing.
	var need int64
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		n, err := l.Size()
		if err != nil {
			t.Fatal(err)
		}
		need += n
	}
	release()
	release = fill(t, store, need+4096)
	r = imageRun(t, env, "pull", "--insecure", ref)
	t.Logf("pull with %d bytes free: exit %d: %s", need, r.code, r.stderr)
	checkPullFailed(t, r, "pull "+ref+": image store "+store+": no space left on device")
	for _, l := range internal {
		if strings.Contains(r.stderr, l) {
			t.Errorf("the error names %s: %s", l, r.stderr)
		}
	}
	if got := names(filepath.Join(store, "tmp")) + names(filepath.Join(store, "refs")); got != "" {
		t.Errorf("a failed pull left %q in the store", got)
	}
	blobs := filepath.Join(store, "blobs", "sha256")
	for _, b := range strings.Fields(names(blobs)) {
		if fileSum(t, filepath.Join(blobs, b)) != b {
			t.Errorf("a failed pull left a partial blob %s", b)
		}
	}

	// Room for the blobs, not for the root: the run fails flattening.
	release()
	release = fill(t, store, 4<<20)
	imageOK(t, "--store", store, "pull", "--insecure", ref)
	r = imageRun(t, env, "run", "-c", "lxc:///", ref)
	t.Logf("run with a 4m store: exit %d: %s", r.code, r.stderr)
	checkOneLine(t, r, "image store "+store+": no space left on device", internal...)
	if got := names(filepath.Join(store, "rootfs")); strings.Contains(got, hexd+" ") || strings.HasSuffix(got, hexd) || strings.Contains(got, ".done") {
		t.Errorf("a failed flattening left %q in rootfs", got)
	}
	if got := names(filepath.Join(store, "tmp")); got != "" {
		t.Errorf("a failed flattening left %q in tmp", got)
	}

	// Room: the same run works, with the whole root.
	release()
	r = imageRun(t, env, "run", "-c", "lxc:///", ref)
	r.want(t, 0, fmt.Sprintf("%d\n%s\n", big, nonce))
	if _, err := os.Stat(filepath.Join(store, "rootfs", hexd+".done")); err != nil {
		t.Errorf("no completion marker: %v", err)
	}
}

// TestCacheFull: a QEMU run whose cache filesystem is full fails with one
// line and leaves no partial initrd; with room the next run works. A
// truncated initrd and a truncated kernel copy in the cache are then found
// and made again, not booted.
func TestCacheFull(t *testing.T) {
	t.Parallel()
	cache := smallFS(t, 64<<20)
	release := fill(t, cache, 2<<20)
	o := opts{env: []string{"VIRT_SANDBOX_CACHE_DIR=" + cache}}
	r := sandbox(t, o, "-c", "qemu:///system", "--", "/bin/echo", "ok")
	t.Logf("QEMU with a 2m cache: exit %d: %s", r.code, r.stderr)
	checkOneLine(t, r, "initrd cache "+cache+"/initrd: no space left on device", ".initrd-")
	if got := names(filepath.Join(cache, "initrd")); got != "" {
		t.Errorf("a failed build left %q in the cache", got)
	}

	release()
	sandbox(t, o, "-c", "qemu:///system", "--", "/bin/echo", "ok").want(t, 0, "ok\n")
	initrds, _ := filepath.Glob(filepath.Join(cache, "initrd", "initrd-*.cpio"))
	kernels, _ := filepath.Glob(filepath.Join(cache, "kernel", "*"))
	if len(initrds) != 1 || len(kernels) != 1 {
		t.Fatalf("the cache holds initrds %q and kernels %q, want one of each", initrds, kernels)
	}
	if got := names(filepath.Join(cache, "initrd")) + " " + names(filepath.Join(cache, "kernel")); strings.Contains(got, ".initrd-") || strings.Contains(got, ".kernel-") {
		t.Errorf("temporary files left in the cache: %s", got)
	}
	good := map[string]string{}
	for _, p := range append(initrds, kernels...) {
		good[p] = fileSum(t, p)
	}

	// Truncated entries: a boot from them would fail or hang.
	for _, p := range append(initrds, kernels...) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, fi.Size()/2); err != nil {
			t.Fatal(err)
		}
	}
	sandbox(t, o, "-c", "qemu:///system", "--", "/bin/echo", "ok").want(t, 0, "ok\n")
	for p, sum := range good {
		if got := fileSum(t, p); got != sum {
			t.Errorf("%s was not made again whole", p)
		}
	}
}

func fileSum(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// TestStateDirFull: a run whose state directory's filesystem is full fails
// with one line naming the option and the state directory, and leaves
// nothing; with room the same run works.
func TestStateDirFull(t *testing.T) {
	t.Parallel()
	state := smallFS(t, 16<<20)
	release := fill(t, state, 64<<10)
	src := filepath.Join(hostDir(t), "payload")
	writeFile(t, src, strings.Repeat("p", 1<<20), 0o644)
	o := opts{env: []string{"VIRT_SANDBOX_STATE_DIR=" + state}}
	args := []string{"-c", "lxc:///", "-W", "-i", "/payload=" + src, "--", "/bin/sh", "-c", "wc -c </payload"}
	r := sandbox(t, o, args...)
	t.Logf("a 64k state directory: exit %d: %s", r.code, r.stderr)
	root := filepath.Join(state, "virt-sandbox")
	checkOneLine(t, r, "-i /payload="+src+": state directory "+root+": no space left on device", "includes")
	if got := names(root); got != "" {
		t.Errorf("the failed run left %q in the state directory", got)
	}
	release()
	sandbox(t, o, args...).want(t, 0, fmt.Sprintf("%d\n", 1<<20))
	if got := names(root); got != "" {
		t.Errorf("the run left %q in the state directory", got)
	}
}

// TestImageRaces: two pulls and then two first runs of one image at once
// both work and store one copy; a damaged layer under a root without its
// completion marker is fetched again and the root rebuilt. Two first QEMU
// runs at once with an empty cache both work and build one initrd.
func TestImageRaces(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	nonce := randomHex(t)
	img := markerImage(t, types.DockerLayer, nonce)
	ref := fmt.Sprintf("%s/vsbtest/race-%s:1", reg.addr, nonce)
	push(t, ref, img)
	digest := digestOf(t, img)
	store := hostDir(t)
	env := opts{env: []string{"VIRT_SANDBOX_IMAGE_STORE=" + store}}
	blobs := filepath.Join(store, "blobs", "sha256")

	twice := func(args ...string) [2]result {
		var rs [2]result
		var wg sync.WaitGroup
		for i := range rs {
			wg.Go(func() { rs[i] = imageRun(t, env, args...) })
		}
		wg.Wait()
		return rs
	}
	for i, r := range twice("pull", "--insecure", ref) {
		if r.code != 0 || r.stdout != ref+" "+digest+"\n" {
			t.Errorf("pull #%d: exit %d, stdout %q, stderr %s", i, r.code, r.stdout, r.stderr)
		}
	}
	// manifest, config, two layers: one copy each.
	if got := strings.Fields(names(blobs)); len(got) != 4 {
		t.Errorf("the store holds blobs %q, want 4", got)
	}
	for i, r := range twice("run", "-c", "lxc:///", ref) {
		if r.code != 0 || r.stdout != nonce+"\n" {
			t.Errorf("run #%d: exit %d, stdout %q, stderr %s", i, r.code, r.stdout, r.stderr)
		}
	}
	hexd := strings.TrimPrefix(digest, "sha256:")
	if got := names(filepath.Join(store, "rootfs")); got != fmt.Sprintf("%[1]s %[1]s.build %[1]s.done %[1]s.lock", hexd) {
		t.Errorf("rootfs holds %q, want one root", got)
	}
	if got := names(filepath.Join(store, "tmp")); got != "" {
		t.Errorf("tmp holds %q", got)
	}

	// A damaged layer and a root without its marker: rebuilt from the
	// layer fetched again, by digest.
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	ld, err := ls[1].Digest()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(blobs, ld.Hex)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	writeFile(t, p, string(b), 0o644)
	os.Remove(filepath.Join(store, "rootfs", hexd+".done"))
	os.WriteFile(filepath.Join(store, "rootfs", hexd, "etc", "marker"), []byte("stale\n"), 0o644)
	imageRun(t, env, "run", "-c", "lxc:///", ref).want(t, 0, nonce+"\n")
	if fileSum(t, p) != ld.Hex {
		t.Errorf("the damaged layer was not fetched again")
	}
	if out := imageOK(t, "--store", store, "list"); strings.Count(out, "\n") != 2 {
		t.Errorf("list after the refetch:\n%s", out)
	}

	// Two first QEMU runs at once, with an empty cache.
	cache := hostDir(t)
	o := opts{env: []string{"VIRT_SANDBOX_CACHE_DIR=" + cache}}
	var rs [2]result
	var wg sync.WaitGroup
	start := time.Now()
	for i := range rs {
		wg.Go(func() { rs[i] = sandbox(t, o, "-c", "qemu:///system", "--", "/bin/echo", "ok") })
	}
	wg.Wait()
	t.Logf("two first QEMU runs: %v", time.Since(start).Round(time.Millisecond))
	for i, r := range rs {
		if r.code != 0 || r.stdout != "ok\n" {
			t.Errorf("QEMU run #%d: exit %d, stdout %q, stderr %s", i, r.code, r.stdout, r.stderr)
		}
	}
	if got := names(filepath.Join(cache, "initrd")); !initrdOnly.MatchString(got) {
		t.Errorf("the cache holds %q, want one initrd", got)
	}
}

var initrdOnly = regexp.MustCompile(`^initrd-[0-9a-f]{32}\.cpio$`)

// TestImageAbsurdSizes: an OCI layout whose index.json says a manifest has
// 1 TB, and a registry image whose layer claims 1 TB, are refused before
// anything is stored, with one line naming the image and the claim.
func TestImageAbsurdSizes(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	nonce := randomHex(t)
	store := hostDir(t)
	env := opts{env: []string{"VIRT_SANDBOX_IMAGE_STORE=" + store}}
	const tb = int64(1) << 40
	img := markerImage(t, types.OCILayer, nonce)

	// A layout: index.json claims 1 TB for the manifest.
	dir := t.TempDir()
	ref := fmt.Sprintf("127.0.0.1:1/vsbtest/huge-%s:1", nonce)
	lp, err := layout.Write(filepath.Join(dir, "layout"), empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(ociImage(img), layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": ref})); err != nil {
		t.Fatal(err)
	}
	idxPath := filepath.Join(dir, "layout", "index.json")
	var im v1.IndexManifest
	if err := json.Unmarshal([]byte(readFile(t, idxPath)), &im); err != nil {
		t.Fatal(err)
	}
	im.Manifests[0].Size = tb
	b, _ := json.Marshal(im)
	writeFile(t, idxPath, string(b), 0o644)
	file := filepath.Join(dir, "huge.tar")
	tarDir(t, filepath.Join(dir, "layout"), file)
	r := imageRun(t, env, "load", file)
	t.Logf("load: exit %d: %s", r.code, r.stderr)
	checkOneLine(t, r, "load "+file+": image "+ref+": manifest sha256:", store+"/tmp")
	checkRefused(t, r, "claims 1.1 TB, more than the 4 MiB allowed")

	// A registry image whose manifest says its layer has 1 TB.
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	m.Layers[1].Size = tb
	pref := fmt.Sprintf("%s/vsbtest/hugelayer-%s:1", reg.addr, nonce)
	push(t, pref, rawManifest{Image: img, manifest: m})
	r = imageRun(t, env, "pull", "--insecure", pref)
	t.Logf("pull: exit %d: %s", r.code, r.stderr)
	checkOneLine(t, r, "pull "+pref+": layer sha256:", store+"/tmp")
	checkRefused(t, r, "claims 1.1 TB, more than the 128 GiB allowed")
	if got := names(filepath.Join(store, "blobs", "sha256")) + names(filepath.Join(store, "refs")) + names(filepath.Join(store, "tmp")); got != "" {
		t.Errorf("refused images left %q in the store", got)
	}
}

// rawManifest is an image whose manifest is manifest, as it is.
type rawManifest struct {
	v1.Image
	manifest *v1.Manifest
}

func (i rawManifest) Manifest() (*v1.Manifest, error) { return i.manifest, nil }
func (i rawManifest) RawManifest() ([]byte, error)    { return json.Marshal(i.manifest) }
func (i rawManifest) Digest() (v1.Hash, error) {
	b, _ := i.RawManifest()
	h, _, err := v1.SHA256(bytes.NewReader(b))
	return h, err
}
func (i rawManifest) Size() (int64, error) {
	b, _ := i.RawManifest()
	return int64(len(b)), nil
}
