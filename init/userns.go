package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/virt-sandbox/virt-sandbox/config/guest"
)

// enterArg, as the init's first argument, makes it the stage that takes a
// program into its user namespace (LXC, --userns on).
//
// A process entering a user namespace gets every capability in it and a
// full bounding set, whatever its parent dropped, and Go's fork cannot run
// code of ours in the child: so the child runs this stage, which drops
// what the program must not have and takes the program's ids inside the
// namespace before it executes the program. The namespace comes with a
// mount namespace of its own, which locks the mounts the init made: the
// program's root cannot unmount them, nor make a read-only one writable.
const enterArg = "enter"

// stage is what the stage is told, as its second argument.
type stage struct {
	Path       string `json:"path"`
	UID        int    `json:"uid"`
	GID        int    `json:"gid"`
	Groups     []int  `json:"groups,omitempty"`
	Dir        string `json:"dir,omitempty"`
	Privileged bool   `json:"privileged,omitempty"`
}

// stageStatusFD is the stage's descriptor, closed when it executes the
// program, where it otherwise writes which of its steps failed and the
// errno.
const stageStatusFD = 3

// inUserNS makes cmd run the program through the stage in a user and mount
// namespace of m's mapping. The stage changes to the working directory as
// the program's user, so that failure is the directory's.
func inUserNS(l *launch, m *guest.IDMap, privileged bool) error {
	cmd, id := l.Cmd, l.id
	st := stage{Path: cmd.Path, UID: id.UID, GID: id.GID, Groups: mappedGroups(id.Groups, m), Dir: cmd.Dir, Privileged: privileged}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	cmd.Path = "/proc/self/exe"
	cmd.Args = append([]string{"virt-sandbox-init", enterArg, string(b)}, cmd.Args...)
	cmd.Dir = ""
	// Root of the namespace, so that the stage keeps its capabilities
	// there when it is executed.
	cmd.SysProcAttr.Credential = &syscall.Credential{NoSetGroups: true}
	cmd.SysProcAttr.Cloneflags = unix.CLONE_NEWUSER | unix.CLONE_NEWNS
	cmd.SysProcAttr.UidMappings = idMappings(m.UIDs)
	cmd.SysProcAttr.GidMappings = idMappings(m.GIDs)
	// The init writes the maps as root of the host: setgroups may stay.
	cmd.SysProcAttr.GidMappingsEnableSetgroups = true
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	l.status = [2]*os.File{r, w}
	cmd.ExtraFiles = []*os.File{l.status[1]}
	return nil
}

func idMappings(ranges []guest.IDRange) []syscall.SysProcIDMap {
	out := make([]syscall.SysProcIDMap, len(ranges))
	for i, r := range ranges {
		out[i] = syscall.SysProcIDMap{ContainerID: r.Inside, HostID: r.Outside, Size: r.Count}
	}
	return out
}

// mappedGroups are the groups of groups that exist in the namespace.
func mappedGroups(groups []int, m *guest.IDMap) []int {
	var out []int
	for _, g := range groups {
		if m.HostGID(g) >= 0 {
			out = append(out, g)
		}
	}
	return out
}

// hostOwner is the host's uid and gid for the program's: what the init
// gives it owns them inside.
func hostOwner(id identity, m *guest.IDMap) (uid, gid int) {
	if m == nil {
		return id.UID, id.GID
	}
	return m.HostUID(id.UID), m.HostGID(id.GID)
}

// stageResult waits for the stage to execute the program or fail; a
// failure is reported as the start of the program would have been.
func (l *launch) stageResult() error {
	l.status[1].Close()
	msg, _ := io.ReadAll(l.status[0])
	l.status[0].Close()
	if len(msg) == 0 {
		return nil
	}
	l.Cmd.Process.Wait()
	step, n, _ := strings.Cut(string(msg), " ")
	num, _ := strconv.Atoi(n)
	errno := unix.Errno(num)
	switch step {
	case "chdir":
		err := workdirFailure(l.dir, l.id, errno)
		if errno == unix.EACCES {
			// Host files of ids outside the map are nobody's inside.
			err.Message += " in its user namespace (--userns off runs it with the host's ids)"
		}
		return err
	case "exec":
		return &fs.PathError{Op: "fork/exec", Path: l.program, Err: errno}
	case "setresuid", "setresgid":
		if errno == unix.EINVAL {
			return fmt.Errorf("uid %d, gid %d: not ids of the user namespace, which maps 0 to 65535 and the caller's own (--userns off runs it with the host's ids)", l.id.UID, l.id.GID)
		}
	}
	return fmt.Errorf("entering the user namespace: %s: %w", step, errno)
}

// enterStage is the stage's main: it never returns.
func enterStage(args []string) {
	runtime.LockOSThread()
	status := os.NewFile(stageStatusFD, "stage status")
	unix.CloseOnExec(stageStatusFD)
	fail := func(step string, err error) {
		var errno unix.Errno
		if !errors.As(err, &errno) {
			errno = unix.EINVAL
		}
		fmt.Fprintf(status, "%s %d", step, int(errno))
		os.Exit(125)
	}
	var st stage
	if len(args) < 2 {
		fail("arguments", unix.EINVAL)
	}
	if err := json.Unmarshal([]byte(args[0]), &st); err != nil {
		fail("arguments", unix.EINVAL)
	}
	// Credentials and the bounding set belong to this thread, which
	// executes the program.
	if !st.Privileged {
		if err := dropBoundingSet(); err != nil {
			fail("capbset", err)
		}
	}
	groups := st.Groups
	if groups == nil {
		groups = []int{}
	}
	if err := unix.Setgroups(groups); err != nil {
		fail("setgroups", err)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(st.GID), uintptr(st.GID), uintptr(st.GID)); e != 0 {
		fail("setresgid", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(st.UID), uintptr(st.UID), uintptr(st.UID)); e != 0 {
		fail("setresuid", e)
	}
	if !st.Privileged {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			fail("no_new_privs", err)
		}
	}
	if st.Dir != "" {
		if err := unix.Chdir(st.Dir); err != nil {
			fail("chdir", err)
		}
	}
	err := unix.Exec(st.Path, args[1:], os.Environ())
	fail("exec", err)
}

// holdArg, as the init's first argument, makes it a process that does
// nothing until its stdin ends: the holder of a user namespace whose
// mapping an idmapped mount takes.
const holdArg = "hold"

// idmapMount replaces the mount at dir by a copy of it whose files of ids
// inside m's namespace show as the host's ids m maps them to.
func idmapMount(dir string, m *guest.IDMap) error {
	ns, err := userNSOf(m)
	if err != nil {
		return err
	}
	defer ns.Close()
	// Recursive: the mounts inside the root come along, as a move would
	// bring them.
	tree, err := unix.OpenTree(unix.AT_FDCWD, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return fmt.Errorf("open_tree %s: %w", dir, err)
	}
	defer unix.Close(tree)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(ns.Fd())}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		// EINVAL: a filesystem the kernel cannot idmap.
		return fmt.Errorf("idmapped mount of %s: %w (--userns off runs it with the host's ids)", dir, err)
	}
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
		return err
	}
	return unix.MoveMount(tree, "", unix.AT_FDCWD, dir, unix.MOVE_MOUNT_F_EMPTY_PATH)
}

// userNSOf is a user namespace of mapping m, held by a child that ends
// once the namespace is open.
func userNSOf(m *guest.IDMap) (*os.File, error) {
	cmd := exec.Command("/proc/self/exe", holdArg)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  unix.CLONE_NEWUSER,
		UidMappings: idMappings(m.UIDs),
		GidMappings: idMappings(m.GIDs),
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer cmd.Wait()
	defer stdin.Close()
	return os.Open(fmt.Sprintf("/proc/%d/ns/user", cmd.Process.Pid))
}

// hold waits for its stdin to end.
func hold() {
	io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}
