package tests

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/virt-sandbox/virt-sandbox/images"
)

// The virt-sandbox-image tests use the store the command uses,
// images.DefaultDir() (root's is fixed, /var/lib/virt-sandbox/images), so
// every image they make is named and filled with a random nonce: digests and
// references never collide with another run's, every root is flattened
// afresh, and each test removes its references and prunes at the end. The
// registry is Debian's docker-registry on 127.0.0.1, a child of the test.

// imageRun runs virt-sandbox-image with args, as sandbox runs the launcher.
func imageRun(t *testing.T, o opts, args ...string) result {
	t.Helper()
	if o.timeout == 0 {
		o.timeout = 3 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, imageCmd, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = o.stdin, &stdout, &stderr
	cmd.Dir = o.dir
	cmd.Env = append(os.Environ(), o.env...)
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String(), elapsed: time.Since(start), code: cmd.ProcessState.ExitCode()}
	if ctx.Err() != nil {
		t.Errorf("virt-sandbox-image %q did not end within %v; stderr:\n%s", args, o.timeout, r.stderr)
	} else if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Errorf("virt-sandbox-image %q: %v", args, err)
	}
	return r
}

// imageOK runs virt-sandbox-image and fails the test unless it exits 0.
func imageOK(t *testing.T, args ...string) string {
	t.Helper()
	r := imageRun(t, opts{}, args...)
	if r.code != 0 {
		t.Fatalf("virt-sandbox-image %q: exit %d, stdout %q, stderr:\n%s", args, r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// checkPullFailed is checkRefused for a failure that may follow pull's
// progress lines ("pulling DIGEST (SIZE)", "cached ...", "done ..."): the
// status is 125, stdout is empty, and stderr ends in the one line that says
// why, which contains want; every other line is a progress line.
func checkPullFailed(t *testing.T, r result, want string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	last := lines[len(lines)-1]
	ok := r.code == 125 && r.stdout == "" && strings.HasSuffix(r.stderr, "\n") &&
		strings.HasPrefix(last, "virt-sandbox-image: ") && strings.Contains(last, want)
	for _, l := range lines[:len(lines)-1] {
		if !strings.HasPrefix(l, "pulling ") && !strings.HasPrefix(l, "cached ") && !strings.HasPrefix(l, "done ") {
			ok = false
		}
	}
	if !ok {
		t.Errorf("exit %d, stdout %q, stderr %q; want 125 and one line containing %s (after progress lines only)", r.code, r.stdout, r.stderr, want)
	}
}

// registry is a docker-registry serving on 127.0.0.1.
type registry struct {
	addr    string // 127.0.0.1:PORT
	storage string // its storage root directory
}

// freePort returns a TCP port on 127.0.0.1 that nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startRegistry starts Debian's docker-registry on a free loopback port with
// its storage in a temporary directory, waits until /v2/ answers, and stops
// it when the test ends.
func startRegistry(t *testing.T) *registry {
	t.Helper()
	if _, err := exec.LookPath("docker-registry"); err != nil {
		t.Fatal("docker-registry is missing: install the Debian package docker-registry (tests/setup-host.sh does)")
	}
	dir := t.TempDir()
	var lastLog string
	for attempt := 0; attempt < 3; attempt++ { // the port may be taken meanwhile
		reg := &registry{
			addr:    fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			storage: filepath.Join(dir, fmt.Sprintf("storage%d", attempt)),
		}
		conf := filepath.Join(dir, fmt.Sprintf("config%d.yml", attempt))
		writeFile(t, conf, fmt.Sprintf(`version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, reg.storage, reg.addr), 0o644)
		logPath := filepath.Join(dir, fmt.Sprintf("registry%d.log", attempt))
		logf, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("docker-registry", "serve", conf)
		// No REGISTRY_* variables of ours may override the config.
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + dir}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			logf.Close()
			t.Fatalf("docker-registry: %v", err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		t.Cleanup(func() {
			cmd.Process.Kill()
			<-exited
			logf.Close()
		})
		client := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 2 * time.Second}
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
			select {
			case <-exited:
				deadline = time.Time{}
				continue
			default:
			}
			resp, err := client.Get("http://" + reg.addr + "/v2/")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return reg
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		cmd.Process.Kill()
		<-exited
		b, _ := os.ReadFile(logPath)
		lastLog = string(b)
	}
	t.Fatalf("docker-registry did not answer on /v2/; its log:\n%s", lastLog)
	return nil
}

// imageRef parses s, a reference to the test registry (plain http).
func imageRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func push(t *testing.T, ref string, img v1.Image) {
	t.Helper()
	if err := remote.Write(imageRef(t, ref), img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

func pushIndex(t *testing.T, ref string, idx v1.ImageIndex) {
	t.Helper()
	if err := remote.WriteIndex(imageRef(t, ref), idx); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

// entry is one tar entry of a test layer.
type entry struct {
	hdr  tar.Header
	body string
}

func dirEntry(p string, mode int64, owner int) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: p + "/", Mode: mode, Uid: owner, Gid: owner}}
}

func fileEntry(p, body string, mode int64) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: mode}, body: body}
}

func symlinkEntry(p, target string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: p, Linkname: target, Mode: 0o777}}
}

func hardlinkEntry(p, target string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeLink, Name: p, Linkname: target, Mode: 0o644}}
}

// layerTar is the tar of entries, as written, with no checks: malicious
// layers are made with it too.
func layerTar(t *testing.T, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := e.hdr
		hdr.ModTime = time.Unix(1700000000, 0)
		hdr.Format = tar.FormatPAX
		if hdr.Typeflag == tar.TypeReg {
			hdr.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(&hdr); err != nil {
			t.Fatalf("tar %q: %v", hdr.Name, err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// layer is a gzipped layer of entries with media type mt.
func layer(t *testing.T, mt types.MediaType, entries ...entry) v1.Layer {
	t.Helper()
	b := layerTar(t, entries)
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithMediaType(mt))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// imageApplets are the commands of the test images: symlinks to the static
// busybox.
var imageApplets = []string{
	"sh", "ls", "cat", "echo", "id", "pwd", "env", "test", "true", "false",
	"touch", "mkdir", "rm", "tr", "printf", "stat", "wc", "grep",
}

// baseLayer is a busybox-static root: the applets, /etc/passwd with root
// and app (1234), the sandbox's mount points, a file /etc/doomed and a
// directory /data with old1 and old2, which the test images' second layer
// deletes and replaces.
func baseLayer(t *testing.T, mt types.MediaType) v1.Layer {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("busybox (busybox-static, installed by tests/setup-host.sh): %v", err)
	}
	es := []entry{
		dirEntry("bin", 0o755, 0),
		fileEntry("bin/busybox", string(bb), 0o755),
	}
	for _, a := range imageApplets {
		es = append(es, symlinkEntry("bin/"+a, "busybox"))
	}
	for _, d := range []string{"dev", "proc", "sys", "run", "etc", "home", "data"} {
		es = append(es, dirEntry(d, 0o755, 0))
	}
	es = append(es,
		dirEntry("tmp", 0o1777, 0),
		dirEntry("root", 0o700, 0),
		dirEntry("home/app", 0o755, 1234),
		fileEntry("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1234:1234::/home/app:/bin/sh\n", 0o644),
		fileEntry("etc/group", "root:x:0:\napp:x:1234:\n", 0o644),
		fileEntry("etc/doomed", "doomed\n", 0o644),
		fileEntry("data/old1", "old1\n", 0o644),
		fileEntry("data/old2", "old2\n", 0o644),
	)
	return layer(t, mt, es...)
}

// markerLayer adds /etc/marker holding marker, which also makes the image
// one of its own.
func markerLayer(t *testing.T, mt types.MediaType, marker string) v1.Layer {
	t.Helper()
	return layer(t, mt, dirEntry("etc", 0o755, 0), fileEntry("etc/marker", marker+"\n", 0o644))
}

// newImage is a linux/arch image of layers with config cfg.
func newImage(t *testing.T, arch string, cfg v1.Config, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	cf.Created = v1.Time{Time: time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)}
	cf.Config = cfg
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// ociImage is img as an OCI image (its layers must be OCI layers already).
func ociImage(img v1.Image) v1.Image {
	return mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
}

// markerImage is the host platform's busybox image whose command prints
// its /etc/marker.
func markerImage(t *testing.T, mt types.MediaType, marker string) v1.Image {
	t.Helper()
	return newImage(t, runtime.GOARCH, v1.Config{
		Entrypoint: []string{"/bin/sh", "-c"},
		Cmd:        []string{"cat /etc/marker"},
		Env:        []string{"PATH=/bin"},
	}, baseLayer(t, mt), markerLayer(t, mt, marker))
}

func digestOf(t *testing.T, img v1.Image) string {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

func storeDir() string { return images.DefaultDir() }

// listImages is `list --json`.
func listImages(t *testing.T) []images.Image {
	t.Helper()
	var list []images.Image
	out := imageOK(t, "list", "--json")
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("list --json: %v\n%s", err, out)
	}
	return list
}

// inspect is `inspect REF`.
func inspect(t *testing.T, ref string) images.Image {
	t.Helper()
	var img images.Image
	out := imageOK(t, "inspect", ref)
	if err := json.Unmarshal([]byte(out), &img); err != nil {
		t.Fatalf("inspect %s: %v\n%s", ref, err, out)
	}
	return img
}

// forgetImages removes, when the test ends, every reference whose name
// holds nonce and prunes the store, then checks that they are gone and the
// store is sound.
func forgetImages(t *testing.T, nonce string) {
	t.Helper()
	start := time.Now()
	t.Cleanup(func() {
		checkStore(t, start, nonce)
		for _, img := range listImages(t) {
			if strings.Contains(img.Ref, nonce) {
				imageOK(t, "rm", img.Ref)
			}
		}
		imageOK(t, "prune")
		for _, img := range listImages(t) {
			if strings.Contains(img.Ref, nonce) {
				t.Errorf("%s still listed after rm and prune", img.Ref)
			}
		}
	})
}

// checkStore checks that the blobs stored since start are what their names
// say, and that every image whose reference holds nonce has its manifest,
// config and layers.
func checkStore(t *testing.T, since time.Time, nonce string) {
	t.Helper()
	blobs := filepath.Join(storeDir(), "blobs", "sha256")
	ents, err := os.ReadDir(blobs)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil || fi.ModTime().Before(since) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(blobs, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue // pruned by another test meanwhile
		}
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != e.Name() {
			t.Errorf("store blob %s holds content of digest %x", e.Name(), sum)
		}
	}
	for _, img := range listImages(t) {
		if !strings.Contains(img.Ref, nonce) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(blobs, strings.TrimPrefix(img.Digest, "sha256:")))
		if err != nil {
			t.Errorf("image %s: manifest: %v", img.Ref, err)
			continue
		}
		m, err := v1.ParseManifest(bytes.NewReader(b))
		if err != nil {
			t.Errorf("image %s: manifest: %v", img.Ref, err)
			continue
		}
		for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
			if _, err := os.Stat(filepath.Join(blobs, d.Digest.Hex)); err != nil {
				t.Errorf("image %s: blob %s: %v", img.Ref, d.Digest, err)
			}
		}
	}
}

// TestImageRun: a pushed image with whiteouts, an opaque directory and a
// full config is pulled, listed, inspected and run: the layers are applied
// as overlayfs would, the config's environment, working directory and user
// hold, the exit status comes back, and a run's writes are gone in the next.
func TestImageRun(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	nonce := randomHex(t)
	forgetImages(t, nonce)

	const persistCheck = `if test -e /home/app/written || test -e /data/written; then echo persisted; else echo fresh; fi`
	cfg := v1.Config{
		Entrypoint: []string{"/bin/sh", "-c"},
		Cmd:        []string{persistCheck},
		Env:        []string{"PATH=/bin", "EQ=a=b"},
		WorkingDir: "/home/app",
		User:       "app",
	}
	changes := layer(t, types.DockerLayer,
		dirEntry("etc", 0o755, 0),
		fileEntry("etc/.wh.doomed", "", 0o644),
		fileEntry("etc/nonce", nonce+"\n", 0o644),
		dirEntry("data", 0o755, 1234),
		fileEntry("data/.wh..wh..opq", "", 0o644),
		fileEntry("data/new", "fresh-content\n", 0o644),
	)
	img := newImage(t, runtime.GOARCH, cfg, baseLayer(t, types.DockerLayer), changes)
	digest := digestOf(t, img)

	onEachDriver(t, func(t *testing.T, uri string) {
		ref := fmt.Sprintf("%s/vsbtest/run-%s:%s", reg.addr, nonce, driverName(uri))
		push(t, ref, img)
		if out := imageOK(t, "pull", "--insecure", ref); out != ref+" "+digest+"\n" {
			t.Errorf("pull printed %q, want %q", out, ref+" "+digest+"\n")
		}

		// list, list --json and inspect.
		var listed bool
		for _, l := range strings.Split(imageOK(t, "list"), "\n") {
			f := strings.Fields(l)
			if len(f) >= 3 && f[0] == ref {
				listed = true
				if f[1] != digest[len("sha256:"):len("sha256:")+12] || f[2] != "linux/"+runtime.GOARCH {
					t.Errorf("list: %q; want digest %s and platform linux/%s", l, digest, runtime.GOARCH)
				}
			}
		}
		if !listed {
			t.Errorf("list does not show %s", ref)
		}
		listed = false
		for _, l := range listImages(t) {
			if l.Ref == ref {
				listed = l.Digest == digest
			}
		}
		if !listed {
			t.Errorf("list --json does not show %s with digest %s", ref, digest)
		}
		got := inspect(t, ref)
		want := images.Config{Entrypoint: cfg.Entrypoint, Cmd: cfg.Cmd, Env: cfg.Env, WorkingDir: cfg.WorkingDir, User: cfg.User}
		if gj, wj := fmt.Sprint(got.Config), fmt.Sprint(want); got.Ref != ref || got.Digest != digest || gj != wj || got.Platform != "linux/"+runtime.GOARCH {
			t.Errorf("inspect: %+v; want ref %s, digest %s, platform linux/%s, config %+v", got, ref, digest, runtime.GOARCH, want)
		}

		// One run checks it all (a QEMU boot is slow), writes, and exits 9.
		script := `
if test -e /etc/doomed; then echo "doomed: present"; else echo "doomed: absent"; fi
echo "data:" $(ls -A /data)
echo "new: $(cat /data/new)"
echo "id: $(id -u) $(id -g) $(id -un)"
echo "pwd: $(pwd)"
echo "EQ: $EQ"
echo "PATH: $PATH"
echo "HOME: $HOME USER: $USER"
echo "nonce: $(cat /etc/nonce)"
echo x >/home/app/written && echo x >/data/written && echo "wrote"
` + persistCheck + `
exit 9`
		r := imageRun(t, opts{}, "run", "-c", uri, ref, "--", script)
		r.want(t, 9, "doomed: absent\n"+
			"data: new\n"+
			"new: fresh-content\n"+
			"id: 1234 1234 app\n"+
			"pwd: /home/app\n"+
			"EQ: a=b\n"+
			"PATH: /bin\n"+
			"HOME: /home/app USER: app\n"+
			"nonce: "+nonce+"\n"+
			"wrote\n"+
			"persisted\n")

		// The next run, with the image's own command, sees none of it.
		r = imageRun(t, opts{}, "run", "-c", uri, ref)
		r.want(t, 0, "fresh\n")

		// docker run's overrides: another entrypoint (the image's
		// command dropped with it), working directory and user.
		r = imageRun(t, opts{}, "run", "-c", uri, "--entrypoint", "/bin/sh", "-w", "/data", "-u", "4321:99", ref,
			"--", "-c", `echo "$(pwd) $(id -u):$(id -g) $0"`)
		r.want(t, 0, "/data 4321:99 /bin/sh\n")
		if driverName(uri) == "lxc" {
			// A user namespace maps ids 0 to 65535 (and the caller's).
			r = imageRun(t, opts{}, "run", "-c", uri, "-u", "70000", ref, "--", "true")
			if r.code != 125 || !strings.Contains(r.stderr, "uid 70000, gid 70000: not ids of the user namespace") {
				t.Errorf("-u 70000: exit %d, stderr %q; want 125 saying the ids are not the namespace's", r.code, r.stderr)
			}
		}
		root := filepath.Join(storeDir(), "rootfs", strings.TrimPrefix(digest, "sha256:"))
		absentOnHost(t, filepath.Join(root, "home/app/written"), filepath.Join(root, "data/written"))
	})
}

// TestImageMultiPlatform: a multi-platform index resolves to the host's
// platform, and --platform picks another.
func TestImageMultiPlatform(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	nonce := randomHex(t)
	forgetImages(t, nonce)

	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	mk := func(arch string) v1.Image {
		return newImage(t, arch, v1.Config{
			Entrypoint: []string{"/bin/sh", "-c"},
			Cmd:        []string{"cat /etc/marker"},
			Env:        []string{"PATH=/bin"},
		}, baseLayer(t, types.DockerLayer), markerLayer(t, types.DockerLayer, arch+"-"+nonce))
	}
	hostImg, otherImg := mk(runtime.GOARCH), mk(other)
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: otherImg, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: other}}},
		mutate.IndexAddendum{Add: hostImg, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}}},
	)
	hostDigest, otherDigest := digestOf(t, hostImg), digestOf(t, otherImg)

	onEachDriver(t, func(t *testing.T, uri string) {
		ref := fmt.Sprintf("%s/vsbtest/multi-%s:%s", reg.addr, nonce, driverName(uri))
		pushIndex(t, ref, idx)

		if out := imageOK(t, "pull", "--insecure", ref); out != ref+" "+hostDigest+"\n" {
			t.Errorf("pull printed %q, want %q", out, ref+" "+hostDigest+"\n")
		}
		if got := inspect(t, ref); got.Digest != hostDigest || got.Platform != "linux/"+runtime.GOARCH {
			t.Errorf("inspect after pull: digest %s, platform %s; want %s, linux/%s", got.Digest, got.Platform, hostDigest, runtime.GOARCH)
		}
		imageRun(t, opts{}, "run", "-c", uri, ref).want(t, 0, runtime.GOARCH+"-"+nonce+"\n")

		if out := imageOK(t, "pull", "--insecure", "--platform", "linux/"+other, ref); out != ref+" "+otherDigest+"\n" {
			t.Errorf("pull --platform linux/%s printed %q, want %q", other, out, ref+" "+otherDigest+"\n")
		}
		if got := inspect(t, ref); got.Digest != otherDigest || got.Platform != "linux/"+other {
			t.Errorf("inspect after pull --platform: digest %s, platform %s; want %s, linux/%s", got.Digest, got.Platform, otherDigest, other)
		}
	})
}

// fileState is what the malicious-layer test checks stays as it was.
func fileState(t *testing.T, p string) string {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s mode %v size %d mtime %v content %x", p, fi.Mode(), fi.Size(), fi.ModTime().UnixNano(), sha256.Sum256([]byte(readFile(t, p))))
}

func dirNames(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return strings.Join(names, " ")
}

// TestImageMaliciousLayers: layers that would write outside the root being
// built are refused (when the root is flattened, at run) with exit 125 and
// one line, or, through a symlink, land inside the root; nothing outside
// the store is written.
func TestImageMaliciousLayers(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	nonce := randomHex(t)
	forgetImages(t, nonce)

	// The targets: a file in a directory outside the store, and /etc/passwd.
	target := hostDir(t)
	sentinel := filepath.Join(target, "sentinel")
	writeFile(t, sentinel, "sentinel\n", 0o644)
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := os.Chtimes(sentinel, old, old); err != nil {
		t.Fatal(err)
	}
	up := strings.Repeat("../", 20) // from any depth up to /
	rel := strings.TrimPrefix(target, "/")
	cases := []struct {
		name    string
		entries []entry
		// inside: the entries go through a symlink, which is followed
		// as if the image's root were / (as containerd and umoci do):
		// they land inside the image, and it runs.
		inside bool
	}{
		{"dotdot", []entry{
			dirEntry("etc", 0o755, 0),
			fileEntry(up+rel+"/sentinel", "pwned\n", 0o644),
			fileEntry(up+rel+"/escaped", "pwned\n", 0o644),
		}, false},
		{"absolute-symlink", []entry{
			dirEntry("etc", 0o755, 0),
			symlinkEntry("evil", target),
			fileEntry("evil/sentinel", "pwned\n", 0o644),
			fileEntry("evil/escaped", "pwned\n", 0o644),
		}, true},
		{"relative-symlink", []entry{
			dirEntry("etc", 0o755, 0),
			symlinkEntry("evil", up+rel),
			fileEntry("evil/sentinel", "pwned\n", 0o644),
		}, true},
		{"hardlink-passwd", []entry{
			dirEntry("etc", 0o755, 0),
			hardlinkEntry("pw", "/etc/passwd"),
			fileEntry("pw", "pwned\n", 0o644),
		}, false},
		{"hardlink-dotdot", []entry{
			dirEntry("etc", 0o755, 0),
			hardlinkEntry("pw", up+"etc/passwd"),
			fileEntry("pw", "pwned\n", 0o644),
		}, false},
	}
	type evil struct {
		name, ref, digest string
		inside            bool
	}
	var evils []evil
	for _, c := range cases {
		layers := []v1.Layer{layer(t, types.DockerLayer, append(c.entries, fileEntry("nonce", nonce, 0o644))...)}
		if c.inside {
			// A shell to look with; the others must not have an
			// /etc/passwd of their own to link to.
			layers = append([]v1.Layer{baseLayer(t, types.DockerLayer)}, layers...)
		}
		img := newImage(t, runtime.GOARCH, v1.Config{Entrypoint: []string{"/bin/sh", "-c"}, Cmd: []string{"echo ran"}, Env: []string{"PATH=/bin"}}, layers...)
		ref := fmt.Sprintf("%s/vsbtest/evil-%s-%s:1", reg.addr, c.name, nonce)
		push(t, ref, img)
		evils = append(evils, evil{c.name, ref, digestOf(t, img), c.inside})
	}
	targetBefore, sentinelBefore, passwdBefore := dirNames(t, target), fileState(t, sentinel), fileState(t, "/etc/passwd")
	// After the parallel subtests, before target is removed.
	t.Cleanup(func() {
		if got := dirNames(t, target); got != targetBefore {
			t.Errorf("%s holds %q, was %q", target, got, targetBefore)
		}
		if got := fileState(t, sentinel); got != sentinelBefore {
			t.Errorf("sentinel changed: %s, was %s", got, sentinelBefore)
		}
		if got := fileState(t, "/etc/passwd"); got != passwdBefore {
			t.Errorf("/etc/passwd changed: %s, was %s", got, passwdBefore)
		}
	})

	onEachDriver(t, func(t *testing.T, uri string) {
		for _, e := range evils {
			t.Run(e.name, func(t *testing.T) {
				// The store verifies blobs at pull; layers are read, and
				// refused, when the root is built at run.
				if r := imageRun(t, opts{}, "pull", "--insecure", e.ref); r.code != 0 {
					checkPullFailed(t, r, "unsafe layer entry")
					return
				}
				if e.inside {
					imageRun(t, opts{}, "run", "-c", uri, e.ref, "--", "cat "+sentinel).want(t, 0, "pwned\n")
					return
				}
				r := imageRun(t, opts{}, "run", "-c", uri, e.ref, "--", "echo ran")
				t.Logf("exit %d: %s", r.code, r.stderr)
				checkRefused(t, r, "unsafe layer entry")
				absentOnHost(t, filepath.Join(storeDir(), "rootfs", strings.TrimPrefix(e.digest, "sha256:")))
			})
		}
	})
}

// corruptBlob flips bytes in the middle of blob digest in the registry's
// storage, keeping its size.
func corruptBlob(t *testing.T, reg *registry, digest v1.Hash) {
	t.Helper()
	p := filepath.Join(reg.storage, "docker/registry/v2/blobs/sha256", digest.Hex[:2], digest.Hex, "data")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("the registry's blob %s: %v", digest, err)
	}
	for i := len(b) / 2; i < len(b)/2+4 && i < len(b); i++ {
		b[i] ^= 0xff
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestImagePullFailures: a missing tag, an unreachable registry and corrupt
// blobs each exit 125 with one line; the store stays sound, and a good pull
// and run then work.
func TestImagePullFailures(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	nonce := randomHex(t)
	forgetImages(t, nonce)
	closed := fmt.Sprintf("127.0.0.1:%d", freePort(t))

	repo := func(n string) string { return fmt.Sprintf("%s/vsbtest/%s-%s", reg.addr, n, nonce) }
	good := repo("good") + ":1"
	push(t, good, markerImage(t, types.DockerLayer, "good-"+nonce))

	// Corrupt one layer of one image and the config of another, in the
	// registry's storage; both are the images' own blobs.
	badLayer := repo("badlayer") + ":1"
	img := markerImage(t, types.DockerLayer, "badlayer-"+nonce)
	push(t, badLayer, img)
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	layerDigest, err := ls[1].Digest()
	if err != nil {
		t.Fatal(err)
	}
	corruptBlob(t, reg, layerDigest)
	badConfig := repo("badconfig") + ":1"
	img = markerImage(t, types.DockerLayer, "badconfig-"+nonce)
	push(t, badConfig, img)
	configDigest, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	corruptBlob(t, reg, configDigest)

	onEachDriver(t, func(t *testing.T, uri string) {
		for _, c := range []struct {
			name, ref, want string
			progress        bool // pull's progress lines may come first
		}{
			{"missing tag", repo("good") + ":nosuchtag", "not found", false},
			{"missing repository", repo("nosuchrepo") + ":1", "not found", false},
			{"unreachable registry", closed + "/vsbtest/x-" + nonce + ":1", closed, false},
			{"corrupt layer", badLayer, "digest mismatch", true},
			{"corrupt config", badConfig, configDigest.String(), false},
		} {
			t.Run(c.name, func(t *testing.T) {
				r := imageRun(t, opts{}, "run", "-c", uri, "--insecure", c.ref, "--", "echo ran")
				t.Logf("exit %d after %v: %s", r.code, r.elapsed.Round(time.Millisecond), r.stderr)
				if c.progress {
					checkPullFailed(t, r, c.want)
				} else {
					checkRefused(t, r, c.want)
				}
				if r.elapsed > time.Minute {
					t.Errorf("took %v", r.elapsed)
				}
			})
		}
		// The store is sound: list works, nothing failed is recorded, and
		// no corrupt blob got a name.
		for _, img := range listImages(t) {
			if img.Ref == badLayer || img.Ref == badConfig || strings.Contains(img.Ref, "nosuch") || strings.Contains(img.Ref, closed) {
				t.Errorf("a failed pull is listed: %+v", img)
			}
		}
		absentOnHost(t,
			filepath.Join(storeDir(), "blobs/sha256", layerDigest.Hex),
			filepath.Join(storeDir(), "blobs/sha256", configDigest.Hex))
		imageOK(t, "list")
		// A good pull afterwards works, and so does running it.
		out := imageOK(t, "pull", "--insecure", good)
		if !strings.HasPrefix(out, good+" sha256:") {
			t.Errorf("pull %s printed %q", good, out)
		}
		imageRun(t, opts{}, "run", "-c", uri, good).want(t, 0, "good-"+nonce+"\n")
	})
}

// tarDir writes the tree dir as a tarball to file.
func tarDir(t *testing.T, dir, file string) {
	t.Helper()
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		hdr.Name = filepath.ToSlash(rel)
		if d.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			_, err = tw.Write(b)
			return err
		}
		return nil
	})
	if err == nil {
		err = tw.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestImageLoad: a docker-archive and an OCI-layout tarball load offline,
// under the names they give, and run.
func TestImageLoad(t *testing.T) {
	t.Parallel()
	nonce := randomHex(t)
	forgetImages(t, nonce)
	// Named after a registry nobody listens on: run must not pull.
	offline := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	dockerImg := markerImage(t, types.DockerLayer, "docker-archive-"+nonce)
	ociImg := ociImage(markerImage(t, types.OCILayer, "oci-layout-"+nonce))
	ociDigest := digestOf(t, ociImg)

	onEachDriver(t, func(t *testing.T, uri string) {
		dir := t.TempDir()
		t.Run("docker-archive", func(t *testing.T) {
			ref := fmt.Sprintf("%s/vsbtest/load-docker-%s:%s", offline, nonce, driverName(uri))
			tag, err := name.NewTag(ref)
			if err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(dir, "docker.tar")
			if err := tarball.WriteToFile(file, tag, dockerImg); err != nil {
				t.Fatal(err)
			}
			out := imageOK(t, "load", file)
			got := inspect(t, ref)
			if out != ref+" "+got.Digest+"\n" || got.Platform != "linux/"+runtime.GOARCH || got.Config.Cmd[0] != "cat /etc/marker" {
				t.Errorf("load printed %q; inspect: %+v", out, got)
			}
			imageRun(t, opts{}, "run", "-c", uri, ref).want(t, 0, "docker-archive-"+nonce+"\n")
		})
		t.Run("oci-layout", func(t *testing.T) {
			ref := fmt.Sprintf("%s/vsbtest/load-oci-%s:%s", offline, nonce, driverName(uri))
			lp, err := layout.Write(filepath.Join(dir, "layout"), empty.Index)
			if err != nil {
				t.Fatal(err)
			}
			if err := lp.AppendImage(ociImg, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": ref})); err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(dir, "oci.tar")
			tarDir(t, filepath.Join(dir, "layout"), file)
			if out := imageOK(t, "load", file); out != ref+" "+ociDigest+"\n" {
				t.Errorf("load printed %q, want %q", out, ref+" "+ociDigest+"\n")
			}
			imageRun(t, opts{}, "run", "-c", uri, ref).want(t, 0, "oci-layout-"+nonce+"\n")
		})
	})
}

// TestImageSymlinkedParents: an image whose lower layer has absolute
// symlinks to directories (Debian's var/run -> /run, merged /usr's lib ->
// /usr/lib) and whose upper layer has files and a hard link through them
// (var/run/app.pid, lib/libfoo.so), as layer-writing build tools make, runs:
// the entries land where the symlinks lead inside the image, as under
// containerd and umoci.
func TestImageSymlinkedParents(t *testing.T) {
	t.Parallel()
	nonce := randomHex(t)
	forgetImages(t, nonce)
	mt := types.DockerLayer
	img := newImage(t, runtime.GOARCH, v1.Config{Env: []string{"PATH=/bin"}},
		baseLayer(t, mt),
		layer(t, mt, dirEntry("var", 0o755, 0), symlinkEntry("var/run", "/run"),
			dirEntry("usr", 0o755, 0), dirEntry("usr/lib", 0o755, 0), symlinkEntry("lib", "/usr/lib")),
		layer(t, mt, fileEntry("var/run/app.pid", "42\n", 0o644), fileEntry("lib/libfoo.so", "foo-"+nonce+"\n", 0o644),
			hardlinkEntry("lib/libfoo.so.1", "lib/libfoo.so")))
	ref := fmt.Sprintf("127.0.0.1:%d/vsbtest/symlinked-%s:1", freePort(t), nonce)
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "image.tar")
	if err := tarball.WriteToFile(file, tag, img); err != nil {
		t.Fatal(err)
	}
	imageOK(t, "load", file)
	t.Run("run", func(t *testing.T) {
		onEachDriver(t, func(t *testing.T, uri string) {
			r := imageRun(t, opts{}, "run", "-c", uri, ref, "--", "/bin/sh", "-c",
				"cat /usr/lib/libfoo.so /lib/libfoo.so.1; test -L /var/run && test -L /lib && echo links kept")
			r.want(t, 0, "foo-"+nonce+"\nfoo-"+nonce+"\nlinks kept\n")
		})
	})
	// A sandbox's /run is a tmpfs of its own, so the image's /run/app.pid
	// is read in the image's flattened root.
	root := filepath.Join(storeDir(), "rootfs", strings.TrimPrefix(inspect(t, ref).Digest, "sha256:"))
	if pid, err := os.ReadFile(filepath.Join(root, "run", "app.pid")); string(pid) != "42\n" {
		t.Errorf("%s/run/app.pid: %q, %v; want %q", root, pid, err, "42\n")
	}
}

// TestImageLoadNames: load keeps the names an archive gives, as podman load
// does: an OCI index's org.opencontainers.image.ref.name that is only a tag
// (as skopeo and umoci write it) becomes localhost/TAG:latest, containerd's
// io.containerd.image.name wins over it, and --tag adds a name. list shows
// the names, and run and rm take the short ones.
func TestImageLoadNames(t *testing.T) {
	t.Parallel()
	nonce := randomHex(t)
	forgetImages(t, nonce)
	dir := t.TempDir()
	img := ociImage(markerImage(t, types.OCILayer, "names-"+nonce))
	digest := digestOf(t, img)
	layoutTar := func(file string, annotations map[string]string) string {
		t.Helper()
		lp, err := layout.Write(filepath.Join(dir, file+".d"), empty.Index)
		if err != nil {
			t.Fatal(err)
		}
		if err := lp.AppendImage(img, layout.WithAnnotations(annotations)); err != nil {
			t.Fatal(err)
		}
		tarDir(t, filepath.Join(dir, file+".d"), filepath.Join(dir, file))
		return filepath.Join(dir, file)
	}
	tagOnly := "app-" + nonce
	full := fmt.Sprintf("127.0.0.1:%d/vsbtest/ctr-%s:1", freePort(t), nonce)
	for _, tt := range []struct {
		name, file string
		args       []string
		want       string // the name load prints and list shows
		short      string // what run and rm are given
	}{
		{"ref name", layoutTar("ref.tar", map[string]string{"org.opencontainers.image.ref.name": tagOnly}), nil, "localhost/" + tagOnly + ":latest", tagOnly},
		{"containerd name", layoutTar("ctr.tar", map[string]string{"io.containerd.image.name": full, "org.opencontainers.image.ref.name": "1"}), nil, full, full},
		{"--tag", layoutTar("none.tar", nil), []string{"--tag", "tagged-" + nonce + ":x"}, "localhost/tagged-" + nonce + ":x", "tagged-" + nonce + ":x"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out := imageOK(t, append(append([]string{"load"}, tt.args...), tt.file)...)
			if out != tt.want+" "+digest+"\n" {
				t.Errorf("load printed %q, want %q", out, tt.want+" "+digest+"\n")
			}
			var listed []string
			for _, i := range listImages(t) {
				if i.Digest == digest {
					listed = append(listed, i.Ref)
				}
			}
			if strings.Join(listed, " ") != tt.want {
				t.Errorf("list shows %q for the image, want only %q", listed, tt.want)
			}
			imageRun(t, opts{}, "run", "-c", "lxc:///", tt.short).want(t, 0, "names-"+nonce+"\n")
			imageOK(t, "rm", tt.short)
			for _, i := range listImages(t) {
				if i.Ref == tt.want {
					t.Errorf("rm %s left %s", tt.short, i.Ref)
				}
			}
		})
	}
	t.Run("bad --tag", func(t *testing.T) {
		file := layoutTar("bad.tar", nil)
		for _, tag := range []string{"Bad:Name", "a b", ""} {
			r := imageRun(t, opts{}, "load", "--tag", tag, file)
			checkRefused(t, r, fmt.Sprintf("--tag %q", tag))
		}
		for _, i := range listImages(t) {
			if i.Digest == digest {
				t.Errorf("a refused load stored %s", i.Ref)
			}
		}
	})
}
