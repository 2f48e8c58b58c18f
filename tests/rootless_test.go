package tests

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// plainUser has no rights at all: not in group libvirt (the system
// libvirtd's socket is closed to it) nor kvm. setup-host.sh makes it.
const plainUser = "sandbox-user"

const sessionURI = "qemu:///session"

// plainCaller is plainUser as `su sandbox-user` makes it: HOME, USER,
// LOGNAME and PATH, no XDG variable, no login session and no systemd, so
// libvirt's client starts the user's session libvirtd itself.
func plainCaller(t *testing.T) *caller {
	t.Helper()
	u, err := user.Lookup(plainUser)
	if err != nil {
		t.Fatalf("user %s (made by tests/setup-host.sh): %v", plainUser, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &caller{
		cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}},
		dir:  u.HomeDir,
		env: []string{
			"PATH=" + os.Getenv("PATH"), "HOME=" + u.HomeDir, "USER=" + plainUser, "LOGNAME=" + plainUser,
		},
		servicesDir: filepath.Join(u.HomeDir, ".config", "virt-sandbox", "services"),
		logDir:      filepath.Join(u.HomeDir, ".local", "state", "virt-sandbox"),
	}
}

// run runs name with args as c, with stdin, and returns how it ended.
func (c *caller) run(t *testing.T, stdin io.Reader, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := c.command(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
	if ctx.Err() != nil {
		t.Errorf("%s %q did not end within 3 minutes; stderr:\n%s", filepath.Base(name), args, r.stderr)
	} else if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Errorf("%s %q: %v", filepath.Base(name), args, err)
	}
	return r
}

// TestRootlessOneShot: a user with no rights runs one-shot sandboxes on
// qemu:///session, with its stdin, stdout, stderr, exit status and
// terminal, and gets one line for what needs more rights.
func TestRootlessOneShot(t *testing.T) {
	c := plainCaller(t)
	t.Run("stdio", func(t *testing.T) {
		t.Parallel()
		r := c.run(t, strings.NewReader("typed\n"), launcher, "-c", sessionURI, "--", "/bin/sh", "-c",
			`id -un; id -G; echo to-stderr >&2; read l; echo "read $l"; exit 7`)
		u, _ := user.Lookup(plainUser)
		r.want(t, 7, plainUser+"\n"+u.Gid+"\nread typed\n")
		if r.stderr != "to-stderr\n" {
			t.Errorf("stderr %q, want %q", r.stderr, "to-stderr\n")
		}
	})
	t.Run("terminal", func(t *testing.T) {
		t.Parallel()
		cmd := c.command(context.Background(), launcher, "-c", sessionURI, "--", "/bin/sh", "-c", `tty; stty size; exit 3`)
		f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 30, Cols: 100})
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		out, _ := io.ReadAll(f) // EIO once the launcher is gone
		cmd.Wait()
		lines := strings.Split(strings.TrimSpace(strings.ReplaceAll(string(out), "\r", "")), "\n")
		if code := cmd.ProcessState.ExitCode(); code != 3 || len(lines) != 2 || !strings.HasPrefix(lines[0], "/dev/pts/") || lines[1] != "30 100" {
			t.Errorf("exit %d, terminal showed %q; want 3, a /dev/pts/N and 30 100", code, out)
		}
	})
	t.Run("embedded", func(t *testing.T) {
		t.Parallel()
		// The embedded driver in the caller's own process, with its
		// state under a directory of the caller's.
		root := filepath.Join(c.dir, "embed-"+randomHex(t))
		t.Cleanup(func() { os.RemoveAll(root) })
		r := c.run(t, nil, launcher, "-c", "qemu:///embed?root="+root, "--", "/bin/sh", "-c", `id -un; exit 4`)
		r.want(t, 4, plainUser+"\n")
	})
	t.Run("user network", func(t *testing.T) { t.Parallel(); testUserNetwork(t, c) })
	t.Run("interrupted", func(t *testing.T) { t.Parallel(); testInterrupted(t, c) })
	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		kernels, _ := filepath.Glob("/boot/vmlinuz-*")
		if len(kernels) == 0 {
			t.Fatal("no kernel in /boot (linux-image-amd64, installed by tests/setup-host.sh)")
		}
		private := filepath.Join(hostDir(t), "vmlinuz")
		writeFile(t, private, "not for you", 0o600)
		type refusal struct {
			args []string
			want string
		}
		refusals := []refusal{
			{[]string{"-c", "lxc:///"}, "qemu:///session runs QEMU as you"},
			{[]string{"-c", "qemu:///system"}, "qemu:///session runs QEMU as you"},
			{[]string{"-c", sessionURI, "-N", "dhcp"}, `-N: qemu:///session has no libvirt network "default"`},
			{[]string{"-c", sessionURI, "-N", "dhcp,source=default"}, "-N user gives QEMU's user-mode network"},
			{[]string{"-c", sessionURI, "--kernpath", private, "--kernver", strings.TrimPrefix(filepath.Base(kernels[0]), "vmlinuz-")},
				"permission denied (QEMU runs as you and reads it"},
		}
		// Some distributions make /dev/kvm anyone's.
		if fi, err := os.Stat("/dev/kvm"); err == nil && fi.Mode().Perm()&0o006 == 0 {
			refusals = append(refusals, refusal{[]string{"-c", sessionURI, "--virt-type", "kvm"}, "--virt-type kvm: /dev/kvm: permission denied"})
		}
		for _, tt := range refusals {
			checkRefused(t, c.run(t, nil, launcher, append(tt.args, "--", "/bin/true")...), tt.want)
		}
	})
	t.Cleanup(func() { checkNoState(t, c) })
}

// testUserNetwork: -N user gives a DHCP lease of QEMU's user-mode network,
// and connections from the sandbox reach the host's loopback through
// 10.0.2.2, as the caller's own sockets.
func testUserNetwork(t *testing.T, c *caller) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(conn, "hello from the host")
			conn.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	r := c.run(t, nil, launcher, "-c", sessionURI, "-N", "user", "--", "/bin/sh", "-c", fmt.Sprintf(
		`ip -4 -o addr show dev eth0 | awk '{print $4}'; ip -4 route show default | cut -d' ' -f1-3; cat /etc/resolv.conf
python3 -c 'import socket; print(socket.create_connection(("10.0.2.2", %d), 30).makefile().readline(), end="")'`, port))
	r.want(t, 0, "10.0.2.15/24\ndefault via 10.0.2.2\nnameserver 10.0.2.3\nhello from the host\n")
}

// testInterrupted: a program that ignores SIGINT outlives the grace period
// and the launcher destroys its sandbox; nothing of it is left, not even
// libvirt's log of the domain, which libvirt finishes after QEMU is gone.
func testInterrupted(t *testing.T, c *caller) {
	name := "sandbox-rootless-int-" + randomHex(t)
	cmd := c.command(context.Background(), launcher, "-c", sessionURI, "-n", name, "--", "/bin/sh", "-c", `trap "" INT; echo up; exec sleep 600`)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 3)
	if _, err := io.ReadFull(out, line); err != nil || string(line) != "up\n" {
		cmd.Process.Kill()
		t.Fatalf("the program did not start: %v", cmd.Wait())
	}
	cmd.Process.Signal(syscall.SIGINT)
	cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 130 {
		t.Errorf("exit %d after SIGINT and the grace period, want 130", code)
	}
	log := filepath.Join(c.dir, ".cache", "libvirt", "qemu", "log", name+".log")
	if _, err := os.Stat(log); err == nil {
		t.Errorf("libvirt's log of the domain is left: %s", log)
	}
}

// checkNoState checks that the caller's state root, in /tmp without
// XDG_RUNTIME_DIR, holds no run's directory.
func checkNoState(t *testing.T, c *caller) {
	root := filepath.Join(os.TempDir(), fmt.Sprintf("virt-sandbox-%d", c.cred.Uid))
	if entries, _ := os.ReadDir(root); len(entries) > 0 {
		t.Errorf("%s holds %d state directories after the runs", root, len(entries))
	}
}

// TestRootlessImage: the user pulls an image into its own store, under
// ~/.local/share, and runs it on qemu:///session.
func TestRootlessImage(t *testing.T) {
	t.Parallel()
	c := plainCaller(t)
	reg := startRegistry(t)
	nonce := randomHex(t)
	ref := fmt.Sprintf("%s/vsbtest/rootless-%s:1", reg.addr, nonce)
	img := markerImage(t, types.DockerLayer, nonce)
	push(t, ref, img)
	store := filepath.Join(c.dir, ".local", "share", "virt-sandbox", "images")
	t.Cleanup(func() {
		c.run(t, nil, imageCmd, "rm", ref)
		c.run(t, nil, imageCmd, "prune")
	})

	if r := c.run(t, nil, imageCmd, "pull", "--insecure", ref); r.code != 0 || r.stdout != ref+" "+digestOf(t, img)+"\n" {
		t.Fatalf("pull: exit %d, stdout %q; stderr:\n%s", r.code, r.stdout, r.stderr)
	}
	r := c.run(t, nil, imageCmd, "run", "-c", sessionURI, ref)
	r.want(t, 0, nonce+"\n")
	// A store that is not root's cannot keep the layers' owners: the
	// image's files are the user's, and the image's root needs -p (its
	// capabilities) to write in its directories.
	r = c.run(t, nil, imageCmd, "run", "-c", sessionURI, "-p", ref, "--", `id -u; echo x >/etc/written && cat /etc/written`)
	r.want(t, 0, "0\nx\n")
	if _, err := os.Stat(filepath.Join(store, "rootfs", strings.TrimPrefix(digestOf(t, img), "sha256:"))); err != nil {
		t.Errorf("the image is not flattened in the user's store %s: %v", store, err)
	}
	checkNoState(t, c)
}

// TestRootlessService: the user creates, starts, executes in, reads the
// log of, stops and deletes a qemu:///session service, kept under its
// XDG directories.
func TestRootlessService(t *testing.T) {
	t.Parallel()
	c := plainCaller(t)
	argv := []string{"/bin/sh", "-c", counter}
	name := newService(t, c, sessionURI, "rootless", nil, argv...)
	if _, err := os.Stat(c.configPath(name)); err != nil {
		t.Errorf("the config is not in the user's config directory: %v", err)
	}
	c.wantListed(t, name, sessionURI, "stopped", argv...)
	c.ok(t, "", "start", name)
	c.wantStatus(t, name, "running")
	c.waitLog(t, name, 2*time.Minute, `"line 3"`, func(l string) bool { return strings.Contains(l, "line 3\n") })
	if _, err := os.Stat(filepath.Join(c.logDir, name, "program.log")); err != nil {
		t.Errorf("the log is not in the user's state directory: %v", err)
	}
	r := c.svc(t, "execute", name, "--", "/bin/sh", "-c", "id -un; exit 4")
	r.want(t, 4, plainUser+"\n")
	c.ok(t, "", "stop", name)
	c.wantStatus(t, name, "stopped")
	testUserUnit(t, c, name)
	c.ok(t, "", "delete", name)
	checkRefused(t, c.svc(t, "status", name), "no such service")
}

// testUserUnit: systemd-unit gives the user a user unit, which needs no
// libvirtd.service, and passes systemd-analyze --user verify.
func testUserUnit(t *testing.T, c *caller, name string) {
	r := c.svc(t, "systemd-unit", name)
	if r.code != 0 || !strings.Contains(r.stdout, "WantedBy=default.target\n") || strings.Contains(r.stdout, "libvirtd.service") {
		t.Fatalf("systemd-unit: exit %d; want a user unit, got:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	// systemd-analyze --user needs a runtime directory.
	dir := hostDir(t)
	os.Chown(dir, int(c.cred.Uid), int(c.cred.Gid))
	unit := filepath.Join(dir, "virt-sandbox-"+name+".service")
	writeFile(t, unit, r.stdout, 0o644)
	v := *c
	v.env = append(append([]string{}, c.env...), "XDG_RUNTIME_DIR="+dir)
	if r := v.run(t, nil, "systemd-analyze", "--user", "verify", unit); r.code != 0 {
		t.Errorf("systemd-analyze --user verify: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = c.svc(t, "systemd-unit", "--install", name)
	installed := filepath.Join(c.dir, ".config", "systemd", "user", "virt-sandbox-"+name+".service")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "installed "+installed+" (systemctl --user daemon-reload;") {
		t.Errorf("systemd-unit --install: exit %d, %q; want it installed in %s; stderr:\n%s", r.code, r.stdout, installed, r.stderr)
	}
	os.Remove(installed)
}
