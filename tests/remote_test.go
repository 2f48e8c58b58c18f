package tests

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The stand-in remote host: a second libvirtd on TCP loopback that cannot
// see the launcher's files (tests/remote-host.sh). Started by the first
// test that needs it, stopped at the end of the run if a test started it.
var remoteSetup struct {
	once    sync.Once
	addr    string
	pid     string
	err     error
	started bool
}

// remoteHost is the host part of the stand-in remote host's URIs.
func remoteHost(t *testing.T) string {
	t.Helper()
	remoteSetup.once.Do(func() {
		remoteSetup.started = exec.Command("./remote-host.sh", "pid").Run() != nil
		checkout, err := filepath.Abs("..")
		if err != nil {
			remoteSetup.err = err
			return
		}
		out, err := exec.Command("./remote-host.sh", "start", checkout).Output()
		if err != nil {
			remoteSetup.err = fmt.Errorf("tests/remote-host.sh start: %v", err)
			return
		}
		remoteSetup.addr = strings.TrimSpace(string(out))
		out, err = exec.Command("./remote-host.sh", "pid").Output()
		remoteSetup.pid, remoteSetup.err = strings.TrimSpace(string(out)), err
	})
	if remoteSetup.err != nil {
		t.Fatal(remoteSetup.err)
	}
	// The set-up proves nothing unless the launcher's files are out of
	// its sight.
	for _, p := range launcherPaths(t) {
		if sameOnRemote(t, p) {
			t.Fatalf("the remote host sees %s of the launcher's machine", p)
		}
	}
	return remoteSetup.addr
}

// stopRemoteHost stops the stand-in remote host if this run started it.
func stopRemoteHost() {
	if remoteSetup.started && remoteSetup.addr != "" {
		exec.Command("./remote-host.sh", "stop").Run()
	}
}

// onRemote tells whether path exists on the remote host.
func onRemote(path string) bool {
	return exec.Command("nsenter", "-t", remoteSetup.pid, "-m", "--", "test", "-e", path).Run() == nil
}

// sameOnRemote tells whether the remote host sees the launcher's
// directory at path: the same file, not one of its own of that name.
func sameOnRemote(t *testing.T, path string) bool {
	local, err := exec.Command("stat", "-c", "%d:%i", path).Output()
	if err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	there, err := exec.Command("nsenter", "-t", remoteSetup.pid, "-m", "--", "stat", "-c", "%d:%i", path).Output()
	return err == nil && bytes.Equal(local, there)
}

// launcherPaths are the places of the launcher's machine a remote domain
// must never name: the binaries and init under test, the state root, the
// cache, the image store and the working directory.
func launcherPaths(t *testing.T) []string {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return []string{binDir, "/run/virt-sandbox", "/var/cache/virt-sandbox", "/var/lib/virt-sandbox", wd}
}

// domainPaths are the host paths a domain's XML names: its sources
// (files, directories, sockets, devices), logs, kernel, initrd and
// emulator; the guest paths (targets, the LXC init) are left out.
func domainPaths(t *testing.T, domXML string) []string {
	t.Helper()
	var paths []string
	d := xml.NewDecoder(strings.NewReader(domXML))
	var elem string
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return paths
		}
		if err != nil {
			t.Errorf("domain XML: %v", err)
			return nil
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			elem = tok.Name.Local
			if elem != "source" && elem != "log" {
				continue
			}
			for _, a := range tok.Attr {
				if slices.Contains([]string{"file", "dir", "path", "dev", "socket"}, a.Name.Local) && strings.HasPrefix(a.Value, "/") {
					paths = append(paths, a.Value)
				}
			}
		case xml.CharData:
			if slices.Contains([]string{"kernel", "initrd", "emulator", "backend"}, elem) {
				paths = append(paths, strings.TrimSpace(string(tok)))
			}
		case xml.EndElement:
			elem = ""
		}
	}
}

// checkRemoteDomain checks that a running remote domain names only files of
// the remote host, none of the launcher's. It runs beside the test's
// goroutine, so it reports with Errorf only.
func checkRemoteDomain(t *testing.T, uri, name string) {
	var out []byte
	var err error
	for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if out, err = exec.Command("virsh", "-c", uri, "dumpxml", name).Output(); err == nil {
			break
		}
	}
	if err != nil {
		t.Errorf("virsh dumpxml %s: %v", name, err)
		return
	}
	paths := domainPaths(t, string(out))
	if len(paths) < 3 {
		t.Errorf("the domain names only %q: the XML was not read\n%s", paths, out)
		return
	}
	for _, p := range paths {
		for _, local := range launcherPaths(t) {
			if p == local || strings.HasPrefix(p, local+"/") {
				t.Errorf("the domain names %s, a path of the launcher's machine (%s)", p, local)
			}
		}
		if !onRemote(p) {
			t.Errorf("the domain names %s, which the remote host lacks", p)
		}
	}
	t.Logf("the domain names %s", strings.Join(paths, " "))
}

// remoteVolumes lists the volumes of the uploads' pool on the remote host.
func remoteVolumes(t *testing.T, addr string) []string {
	t.Helper()
	out, err := exec.Command("virsh", "-q", "-c", "qemu+tcp://"+addr+"/system", "vol-list", "virt-sandbox").Output()
	if err != nil {
		t.Fatalf("virsh vol-list virt-sandbox: %v", err)
	}
	var vols []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			vols = append(vols, f[0])
		}
	}
	return vols
}

// TestRemoteOneShot runs a program on the stand-in remote host on each
// driver: its stdin, stdout, stderr and exit status are as on a local
// connection, its domain names nothing of the launcher's machine (the
// program waits on its stdin while the XML is read), and a second run
// uploads nothing.
func TestRemoteOneShot(t *testing.T) {
	addr := remoteHost(t)
	for _, uri := range []string{"lxc+tcp://" + addr + "/", "qemu+tcp://" + addr + "/system"} {
		t.Run(driverName(uri), func(t *testing.T) {
			t.Parallel()
			name := uniqueName("remote")
			// A file of the launcher's machine, which travels with the
			// config.
			include := filepath.Join(t.TempDir(), "included")
			if err := os.WriteFile(include, []byte("included\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			stdin := watchedStdin(t, uri, name, "from stdin\n")
			r := sandbox(t, opts{stdin: stdin}, "-c", uri, "-n", name, "-e", "GREETING=hi", "-i", "/tmp/inc="+include, "--",
				"/bin/sh", "-c", `echo "$GREETING from $(pwd)"; cat /tmp/inc; cat; echo to stderr >&2; exit 3`)
			r.want(t, 3, "hi from /\nincluded\nfrom stdin\n")
			if r.stderr != "to stderr\n" {
				t.Errorf("stderr %q, want %q", r.stderr, "to stderr\n")
			}
			if out, err := exec.Command("virsh", "-c", uri, "dominfo", name).CombinedOutput(); err == nil {
				t.Errorf("domain %s left behind on the remote host:\n%s", name, out)
			}

			before := remoteVolumes(t, addr)
			again := sandbox(t, opts{}, "-c", uri, "-d", "--", "/bin/true")
			checkUploadedNothing(t, addr, before, again)
			// The remote host's sockets are not ours to dial: stdio
			// stays on the channel.
			if strings.Contains(again.stderr, "stdio: on the data ports") {
				t.Errorf("a remote run used the data ports:\n%s", again.stderr)
			}
		})
	}
}

// watchedStdin is the stdin of a run whose program reads it: it gives
// feed only once the running domain name has been checked, so the program
// is still running while its XML is read.
func watchedStdin(t *testing.T, uri, name, feed string) io.Reader {
	stdin, w := io.Pipe()
	go func() {
		defer w.Close()
		checkRemoteDomain(t, uri, name)
		io.WriteString(w, feed)
	}()
	return stdin
}

// checkUploadedNothing checks that a run with -d that ended well uploaded
// nothing: it says so, and the pool's volumes are those before it.
func checkUploadedNothing(t *testing.T, addr string, before []string, r result) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("second run: exit %d; stderr:\n%s", r.code, r.stderr)
	}
	if strings.Contains(r.stderr, "uploaded the") {
		t.Errorf("the second run uploaded again:\n%s", grepLines(r.stderr, "upload"))
	}
	if !strings.Contains(r.stderr, "uploaded before") {
		t.Errorf("the second run did not say it used uploaded volumes:\n%s", r.stderr)
	}
	if after := remoteVolumes(t, addr); !slices.Equal(before, after) {
		t.Errorf("volumes before the second run %q, after %q", before, after)
	}
}

// TestRemoteImageRun pushes an image to the stand-in remote host and runs
// it there on each driver, in turn (the volume lists must not change under
// each other): its root is one squashfs volume, attached as a disk (the
// XML names only the remote host's files), with a writable layer thrown
// away, and a second run uploads nothing.
func TestRemoteImageRun(t *testing.T) {
	addr := remoteHost(t)
	reg := startRegistry(t)
	nonce := randomHex(t)
	forgetImages(t, nonce)
	img := markerImage(t, types.DockerLayer, nonce)

	// push pre-seeds the host, once; list -c shows what it holds.
	pushed := fmt.Sprintf("%s/vsbtest/remote-%s:pushed", reg.addr, nonce)
	push(t, pushed, img)
	qemuURI := "qemu+tcp://" + addr + "/system"
	if out := imageOK(t, "push", "--insecure", "-c", qemuURI, pushed); !strings.HasSuffix(out, ": pushed\n") {
		t.Errorf("push printed %q, want it pushed", out)
	}
	if out := imageOK(t, "push", "-c", qemuURI, pushed); !strings.HasSuffix(out, ": already there\n") {
		t.Errorf("a second push printed %q, want it already there", out)
	}
	if out := imageOK(t, "list", "-c", qemuURI); !strings.Contains(out, pushed) {
		t.Errorf("list -c %s does not show %s:\n%s", qemuURI, pushed, out)
	}
	if r := imageRun(t, opts{}, "push", "-c", "lxc:///", pushed); r.code != 125 || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("push -c lxc:///: exit %d, stderr %q; want 125 and one line", r.code, r.stderr)
	}

	for _, uri := range []string{"lxc+tcp://" + addr + "/", qemuURI} {
		t.Run(driverName(uri), func(t *testing.T) {
			ref := fmt.Sprintf("%s/vsbtest/remote-%s:%s", reg.addr, nonce, strings.TrimSuffix(driverName(uri), "+tcp"))
			push(t, ref, img)
			imageOK(t, "pull", "--insecure", ref)
			name := uniqueName("remote-image")
			r := imageRun(t, opts{stdin: watchedStdin(t, uri, name, "go\n"), timeout: 4 * time.Minute}, "run", "-c", uri, "-n", name, ref, "--",
				"read go; cat /etc/marker; echo x >/etc/written && echo wrote")
			r.want(t, 0, nonce+"\nwrote\n")
			before := remoteVolumes(t, addr)
			again := imageRun(t, opts{}, "run", "-c", uri, "-d", ref, "--", "test -e /etc/written && echo persisted; cat /etc/marker")
			checkUploadedNothing(t, addr, before, again)
			if again.stdout != nonce+"\n" {
				t.Errorf("second run printed %q, want %q", again.stdout, nonce+"\n")
			}
		})
	}
}

// grepLines are the lines of s that contain sub.
func grepLines(s, sub string) string {
	var b bytes.Buffer
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, sub) {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// TestRemoteService runs a service's life on the stand-in remote host on
// each driver: create, start (the config travels on the channel), logs
// (sent by the sandbox while it runs, kept here once it stops), execute,
// stop and delete; its domain names only the remote host's files, and
// autostart, which would start it without its config, is refused.
func TestRemoteService(t *testing.T) {
	addr := remoteHost(t)
	for _, uri := range []string{"lxc+tcp://" + addr + "/", "qemu+tcp://" + addr + "/system"} {
		t.Run(driverName(uri), func(t *testing.T) {
			t.Parallel()
			c := rootCaller
			name := newService(t, c, uri, "remote", nil, "/bin/sh", "-c", counter)
			c.ok(t, "", "start", name)
			c.wantStatus(t, name, "running")
			checkRemoteDomain(t, uri, name)
			c.waitLog(t, name, 3*time.Minute, "line 5", func(log string) bool { return strings.Contains(log, "line 5\n") })
			c.ok(t, "inside\n", "execute", name, "--", "/bin/echo", "inside")
			c.ok(t, "", "stop", name)
			c.wantStatus(t, name, "stopped")
			if log := c.logs(t, name); !strings.Contains(log, "line 5\n") {
				t.Errorf("the log of the stopped service lacks line 5:\n%s", tail(log, 10))
			}
			if r := c.svc(t, "autostart", name, "on"); r.code != 125 || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("autostart on: exit %d, stderr %q; want 125 and one line", r.code, r.stderr)
			}
		})
	}
}

// TestRemoteUploadTakeover leaves a half-uploaded volume on the stand-in
// remote host, as a launcher killed during its upload would (the volume
// without its marker, no longer growing): a run waits for it to stop
// growing, takes the upload over and runs; a run interrupted while it
// waits ends at once.
func TestRemoteUploadTakeover(t *testing.T) {
	addr := remoteHost(t)
	uri := "lxc+tcp://" + addr + "/"
	// What the run uploads: the init, named by its content.
	sum, err := exec.Command("sha256sum", filepath.Join(binDir, "virt-sandbox-init")).Output()
	if err != nil {
		t.Fatal(err)
	}
	vol := "init-" + string(sum[:32])
	virsh := func(args ...string) {
		exec.Command("virsh", append([]string{"-q", "-c", uri}, args...)...).Run()
	}
	virsh("vol-delete", "--pool", "virt-sandbox", vol+".done")
	virsh("vol-delete", "--pool", "virt-sandbox", vol)
	if out, err := exec.Command("virsh", "-q", "-c", uri, "vol-create-as", "virt-sandbox", vol, "4096").CombinedOutput(); err != nil {
		t.Fatalf("making a half-uploaded volume: %v: %s", err, out)
	}
	// Interrupted while it waits, a run ends at once, as if its program
	// had been killed, and leaves the other launcher's upload alone.
	name := uniqueName("interrupted")
	cmd := exec.Command(launcher, "-c", uri, "-n", name, "--", "/bin/echo", "ran")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	cmd.Process.Signal(syscall.SIGINT)
	cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 130 || out.Len() != 0 {
		t.Errorf("interrupted while waiting for an upload: exit %d, output %q; want 130 and nothing", code, out.String())
	}
	checkGone(t, uri, name)
	if vols := remoteVolumes(t, addr); !slices.Contains(vols, vol) {
		t.Errorf("the interrupted run removed the other upload's volume %s: %q", vol, vols)
	}

	r := sandbox(t, opts{}, "-c", uri, "-d", "--", "/bin/echo", "ran")
	if r.code != 0 || !strings.Contains(r.stdout, "ran") {
		t.Fatalf("exit %d, stdout %q; stderr:\n%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "uploaded the init to volume "+vol) {
		t.Errorf("the run did not upload the init itself:\n%s", grepLines(r.stderr, "init"))
	}
	if vols := remoteVolumes(t, addr); !slices.Contains(vols, vol+".done") {
		t.Errorf("volume %s is not marked whole: %q", vol, vols)
	}
}
