package tests

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestUserNamespace: with -p on LXC the program is root of a user
// namespace whose ids are not the host's, what it writes to the host
// belongs to the mapped id, and --userns off brings back root of the host;
// a caller's own uid maps to itself.
func TestUserNamespace(t *testing.T) {
	t.Parallel()
	dir := hostDir(t)
	out := filepath.Join(dir, "out")
	os.Mkdir(out, 0o777)
	os.Chmod(out, 0o777)
	bind := "host-bind:/out=" + out
	write := func(name string) string {
		return `cat /proc/self/uid_map | tr -s " " | sed "s/^ //"; id -u; touch /out/` + name
	}

	r := sandbox(t, opts{}, "-c", "lxc:///", "-p", "-m", bind, "/bin/sh", "-c", write("p"))
	lines := strings.Split(r.stdout, "\n")
	if r.code != 0 || len(lines) < 2 || !strings.HasPrefix(lines[0], "0 ") || strings.HasPrefix(lines[0], "0 0 ") || lines[1] != "0" {
		t.Errorf("-p: exit %d, stdout %q; want a uid_map of 0 to a host id other than 0, and uid 0; stderr:\n%s", r.code, r.stdout, r.stderr)
	}
	if uid := ownerOf(t, filepath.Join(out, "p")); uid == 0 {
		t.Errorf("-p: the file the program wrote belongs to root of the host")
	}

	r = sandbox(t, opts{}, "-c", "lxc:///", "-p", "--userns", "off", "-m", bind, "/bin/sh", "-c", write("off"))
	r.want(t, 0, "0 0 4294967295\n0\n")
	if uid := ownerOf(t, filepath.Join(out, "off")); uid != 0 {
		t.Errorf("-p --userns off: the file the program wrote belongs to uid %d, want root", uid)
	}

	// The caller's own ids map to themselves: its files stay its own.
	u := lookupUser(t)
	r = sandbox(t, opts{asUser: true}, "-c", "lxc:///", "--userns", "on", "-m", bind, "/bin/sh", "-c", write("user"))
	if !strings.Contains(r.stdout, "\n"+u.Uid+" "+u.Uid+" 1\n") || !strings.Contains(r.stdout, "\n"+u.Uid+"\n") {
		t.Errorf("--userns on as %s: exit %d, stdout %q; want its uid %s mapped to itself; stderr:\n%s", testUser, r.code, r.stdout, u.Uid, r.stderr)
	}
	if uid := ownerOf(t, filepath.Join(out, "user")); strconv.Itoa(uid) != u.Uid {
		t.Errorf("--userns on as %s: the file the program wrote belongs to uid %d, want %s", testUser, uid, u.Uid)
	}

	// A working directory the namespace's root cannot enter is the
	// sandbox's failure, with a way out.
	private := filepath.Join(dir, "private")
	os.Mkdir(private, 0o700)
	r = sandbox(t, opts{dir: private}, "-c", "lxc:///", "-p", "true")
	if r.code != 125 || !strings.Contains(r.stderr, "working directory "+private) || !strings.Contains(r.stderr, "--userns off") {
		t.Errorf("-p in %s: exit %d, stderr %q; want 125 naming the directory and --userns off", private, r.code, r.stderr)
	}
}

func ownerOf(t *testing.T, p string) int {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Errorf("%s: %v", p, err)
		return -1
	}
	return int(fi.Sys().(*syscall.Stat_t).Uid)
}
