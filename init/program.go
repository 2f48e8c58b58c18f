package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/virt-sandbox/virt-sandbox/config"
	"github.com/virt-sandbox/virt-sandbox/config/guest"
	"github.com/virt-sandbox/virt-sandbox/sandbox/console"
)

// run is the last step: a one-shot sandbox waits for the launcher and runs
// its program; a service runs its program at once and serves requests.
func run(b *boot) error {
	if b.cfg.Service != nil {
		return runService(b)
	}
	if err := handshake(b); err != nil {
		return err
	}
	return runProgram(b)
}

// runProgram starts the program as the configured identity and relays it
// until it ends; then everything else in the sandbox ends too.
func runProgram(b *boot) error {
	return relay(b, b.guest, b.cfg.Command.Argv, func(pid int) console.Status { return reap(pid) })
}

// relay starts argv as the configured identity, on a terminal or pipes as
// the host asked, and relays it over g until wait says it ended.
func relay(b *boot, g *console.Guest, argv []string, wait func(pid int) console.Status) error {
	cmd, err := command(b.cfg, b.resolved.IDMap, argv)
	if err != nil {
		return err
	}
	tty, size := g.TTY()
	// The start's own time, to tell what a user namespace's stage costs.
	t := time.Now()
	var p console.Program
	switch {
	case tty:
		p, err = startTTY(cmd, size)
	case g.StdioSocket() != "":
		var files [3]*os.File
		if files, err = receiveStdio(b, g.StdioSocket()); err != nil {
			return err
		}
		p, err = startOnFiles(cmd, files)
	default:
		var ports *console.GuestPorts
		if g.DataPorts() {
			if ports, err = openDataPorts(g); err != nil {
				return err
			}
		}
		p, err = startPipes(cmd, ports)
	}
	if err != nil {
		return execFailure(cmd.program, err)
	}
	b.logf("program: started %s as pid %d in %v", cmd.program, cmd.Process.Pid, time.Since(t).Round(time.Microsecond))
	if m := b.resolved.IDMap; m != nil {
		b.logf("program: in a user namespace mapping uids %v and gids %v (inside, host, count)", m.UIDs, m.GIDs)
	}
	p.Wait = func() console.Status { return wait(cmd.Process.Pid) }
	if b.cfg.Service == nil {
		p.HostGone = b.hostGone
	}
	return g.Serve(p)
}

// launch is a program ready to start.
type launch struct {
	*exec.Cmd
	// program and dir are the program's path and working directory,
	// which the Cmd names differently when a stage runs first.
	program, dir string
	id           identity
	// unprivileged empties the program's capability bounding set and
	// sets its no_new_privs.
	unprivileged bool
	// status, when the program runs through the stage of a user
	// namespace, is the pipe where the stage reports a failure.
	status [2]*os.File
}

// start starts the program. The bounding set and no_new_privs belong to a
// thread, and a fork copies them from the thread that forks: dropped on
// one thread of the init, they were missing from a program forked on
// another, which then had every capability now and then. So the drop and
// the fork happen on one thread, locked to a goroutine that ends without
// unlocking it, which ends the thread too: no other goroutine runs on it.
func (l *launch) start() error {
	if err := l.startOnThread(); err != nil || l.status[0] == nil {
		if l.status[0] != nil {
			l.status[0].Close()
			l.status[1].Close()
		}
		return err
	}
	return l.stageResult()
}

func (l *launch) startOnThread() error {
	if !l.unprivileged {
		return l.Cmd.Start()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := dropPrivileges(); err != nil {
			// %v: not an error of the program's file, as execFailure
			// would take an EPERM for.
			errc <- fmt.Errorf("dropping privileges: %v", err)
			return
		}
		errc <- l.Cmd.Start()
	}()
	return <-errc
}

// command prepares a process of the program's identity, environment and
// directory for argv, in a user namespace of idmap when it is not nil.
func command(cfg *config.Sandbox, idmap *guest.IDMap, argv []string) (*launch, error) {
	id, err := resolveIdentity(cfg.Identity)
	if err != nil {
		return nil, err
	}
	env := withDefaults(cfg.Command.Env, map[string]string{"HOME": id.Home, "USER": id.User, "LOGNAME": id.User})
	path, err := lookPath(argv[0], env)
	if err != nil {
		return nil, err
	}
	cmd := &exec.Cmd{Path: path, Args: argv, Env: env, Dir: cfg.Command.Dir}
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	if id.UID != 0 || id.GID != 0 || len(id.Groups) > 0 {
		groups := make([]uint32, len(id.Groups))
		for i, g := range id.Groups {
			groups[i] = uint32(g)
		}
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(id.UID), Gid: uint32(id.GID), Groups: groups}
	}
	l := &launch{Cmd: cmd, program: path, dir: cmd.Dir, id: id, unprivileged: !cfg.Identity.Privileged}
	if idmap != nil {
		return l, inUserNS(l, idmap, cfg.Identity.Privileged)
	}
	if cmd.Dir != "" {
		if err := canEnter(cmd.Dir, id, cfg.Identity.Privileged); err != nil {
			return nil, workdirFailure(cmd.Dir, id, err)
		}
	}
	return l, nil
}

// canEnter tells whether the program, as id, can make dir its working
// directory. Go starts a process by switching to its credentials and then
// changing directory, so a directory it cannot enter would come back as
// the exec's own EACCES: it is checked first, on a thread that takes the
// program's credentials (the kernel keeps them per thread) and is never
// given back, so it ends with them.
func canEnter(dir string, id identity, privileged bool) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- accessAs(dir, id, privileged)
	}()
	return <-errc
}

// accessAs checks, on the calling thread, that id can search dir.
func accessAs(dir string, id identity, privileged bool) error {
	if err := unix.Setgroups(id.Groups); err != nil {
		return err
	}
	// The file system ids are what path look-ups are checked against;
	// leaving uid 0 drops the file capabilities, as for the program.
	unix.Setfsgid(id.GID)
	unix.Setfsuid(id.UID)
	if !privileged {
		// The program has no capabilities, even as uid 0.
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			return err
		}
	}
	// "/." makes a file that is not a directory fail as chdir would.
	return unix.Faccessat2(unix.AT_FDCWD, dir+"/.", unix.X_OK, unix.AT_EACCESS)
}

// workdirFailure reports a working directory the program cannot enter. It
// is the sandbox's failure, not the command's, so it is 125, as env
// --chdir and chroot(1) report theirs, and the line names the directory.
func workdirFailure(dir string, id identity, err error) *console.Failed {
	msg := fmt.Sprintf("working directory %s: %v", dir, err)
	if errors.Is(err, unix.EACCES) {
		who := id.User
		if who == "" {
			who = "the program's user"
		}
		msg = fmt.Sprintf("working directory %s: %s (uid %d) cannot enter it: %v", dir, who, id.UID, err)
	}
	return &console.Failed{Status: 125, Message: msg}
}

// identity is who the program runs as, resolved inside the sandbox.
type identity struct {
	UID, GID int
	Groups   []int
	User     string
	Home     string
}

// resolveIdentity completes an identity given by name from the sandbox's own
// /etc/passwd.
func resolveIdentity(c config.Identity) (identity, error) {
	id := identity{UID: c.UID, GID: c.GID, Groups: c.Groups, User: c.User, Home: c.Home}
	if !c.ByName {
		return id, nil
	}
	u, err := user.Lookup(c.User)
	if err != nil {
		return id, fmt.Errorf("user %q: %w", c.User, err)
	}
	id.UID, id.GID, id.Home = atoi(u.Uid), atoi(u.Gid), u.HomeDir
	id.Groups = nil
	gids, err := u.GroupIds()
	if err != nil {
		return id, fmt.Errorf("groups of user %q: %w", c.User, err)
	}
	for _, g := range gids {
		id.Groups = append(id.Groups, atoi(g))
	}
	return id, nil
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// withDefaults adds the entries of defaults whose keys env does not set.
func withDefaults(env []string, defaults map[string]string) []string {
	out := append([]string(nil), env...)
	for _, k := range []string{"HOME", "USER", "LOGNAME"} {
		v := defaults[k]
		if v == "" || hasKey(env, k) {
			continue
		}
		out = append(out, k+"="+v)
	}
	return out
}

func hasKey(env []string, key string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, key+"=") {
			return true
		}
	}
	return false
}

// lookPath finds the program along the program's own PATH, not the init's,
// without touching the init's environment: a service's sessions look up
// their commands concurrently.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	path := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			// An empty entry is the working directory, as in a shell.
			dir = "."
		}
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", &console.Failed{Status: 127, Message: fmt.Sprintf("%s: command not found", name)}
}

// execFailure maps a failed start to the statuses a shell uses: 127 when
// the program is not there, 126 for anything else execve refused (not
// executable, a directory, a symbolic link loop, too long an argument
// list), as bash does.
func execFailure(path string, err error) error {
	if errors.Is(err, unix.ENOENT) {
		return &console.Failed{Status: 127, Message: fmt.Sprintf("%s: no such file or directory", path)}
	}
	var pe *fs.PathError
	var errno unix.Errno
	if errors.As(err, &pe) && pe.Op == "fork/exec" && errors.As(pe.Err, &errno) {
		return &console.Failed{Status: 126, Message: fmt.Sprintf("%s: cannot execute: %v", path, errno)}
	}
	return err
}

// dropPrivileges empties the capability bounding set and sets no_new_privs
// of the calling thread, so neither a program it forks nor anything that
// runs (set-uid binaries of the host root included) can gain a capability.
// The thread keeps its effective capabilities.
func dropPrivileges() error {
	if err := dropBoundingSet(); err != nil {
		return err
	}
	return unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
}

// dropBoundingSet empties the calling thread's capability bounding set.
func dropBoundingSet() error {
	for c := 0; c <= unix.CAP_LAST_CAP; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && err != unix.EINVAL {
			return fmt.Errorf("dropping capability %d: %w", c, err)
		}
	}
	return nil
}

// startPipes runs the program on pipes, in its own process group so that
// forwarded signals reach it and its children as a terminal's would. With
// data ports, the program reads the stdin port itself.
func startPipes(cmd *launch, ports *console.GuestPorts) (console.Program, error) {
	p := console.Program{Ports: ports}
	var inR, inW *os.File
	var err error
	if ports != nil {
		inR = ports.Stdin
	} else if inR, inW, err = os.Pipe(); err != nil {
		return p, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return p, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		return p, err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	cmd.SysProcAttr.Setpgid = true
	err = cmd.start()
	inR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		return p, err
	}
	pgid := cmd.Process.Pid
	if inW != nil {
		p.Stdin = inW
	}
	p.Stdout, p.Stderr = outR, errR
	p.Signal = func(sig syscall.Signal) { unix.Kill(-pgid, sig) }
	return p, nil
}

// openDataPorts opens the virtio-serial ports that carry the program's
// stdio when the host asked for them, and waits for the host to connect.
func openDataPorts(g *console.Guest) (*console.GuestPorts, error) {
	deadline := time.Now().Add(deviceWait)
	var f [3]*os.File
	// The program reads its stdin port itself: read-only, so that it
	// cannot write to the host through it.
	for i, flag := range []int{os.O_RDONLY, os.O_WRONLY, os.O_WRONLY} {
		var err error
		if f[i], err = openVirtioPort(guest.DataPorts[i], flag, deadline); err != nil {
			return nil, fmt.Errorf("stdio ports: %w", err)
		}
	}
	ports := &console.GuestPorts{Stdin: f[0], Stdout: f[1], Stderr: f[2]}
	if err := g.OpenPorts(ports, deadline); err != nil {
		return nil, fmt.Errorf("stdio ports: %w", err)
	}
	return ports, nil
}

// receiveStdio takes the program's stdio from the host's socket name in
// the config share, reached through the sandbox's own /run: a user's mount
// over /run may hide the share's path.
func receiveStdio(b *boot, name string) ([3]*os.File, error) {
	dir, err := b.ownRun.OpenFile(inRun(guest.Dir), unix.O_PATH, 0)
	if err != nil {
		return [3]*os.File{}, err
	}
	defer dir.Close()
	return console.ReceiveStdio(fmt.Sprintf("/proc/self/fd/%d/%s", dir.Fd(), name))
}

// startOnFiles runs the program on the stdin, stdout and stderr the host
// handed over, in its own process group as startPipes does. The init keeps
// none of them open: the caller must see the end of the program's output
// when the program is gone.
func startOnFiles(cmd *launch, files [3]*os.File) (console.Program, error) {
	cmd.Stdin, cmd.Stdout, cmd.Stderr = files[0], files[1], files[2]
	cmd.SysProcAttr.Setpgid = true
	err := cmd.start()
	for _, f := range files {
		f.Close()
	}
	if err != nil {
		return console.Program{}, err
	}
	pgid := cmd.Process.Pid
	return console.Program{Signal: func(sig syscall.Signal) { unix.Kill(-pgid, sig) }}, nil
}

// startTTY runs the program as the leader of a new session on a fresh pty.
func startTTY(cmd *launch, size console.WinSize) (console.Program, error) {
	master, err := startOnPTY(cmd, size)
	if err != nil {
		return console.Program{}, err
	}
	return console.Program{
		Stdin:  keepOpen{master},
		Stdout: master,
		Signal: func(sig syscall.Signal) {
			// The terminal's foreground group, as a terminal would.
			if pgid, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPGRP); err == nil {
				unix.Kill(-pgid, sig)
			}
		},
		Resize: func(ws console.WinSize) { pty.Setsize(master, &pty.Winsize{Rows: ws.Rows, Cols: ws.Cols}) },
	}, nil
}

// startOnPTY starts cmd as the leader of a new session whose controlling
// terminal is a fresh pty of size (when known), and returns its master.
func startOnPTY(cmd *launch, size console.WinSize) (*os.File, error) {
	master, slave, err := pty.Open()
	if err != nil {
		return nil, err
	}
	if size.Rows > 0 && size.Cols > 0 {
		pty.Setsize(master, &pty.Winsize{Rows: size.Rows, Cols: size.Cols})
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr.Setsid = true
	cmd.SysProcAttr.Setctty = true
	cmd.SysProcAttr.Ctty = 0
	err = cmd.start()
	slave.Close()
	if err != nil {
		master.Close()
		return nil, err
	}
	return master, nil
}

// keepOpen is a terminal master as the program's stdin: the end of the
// caller's input must not close the master, which is also its output.
type keepOpen struct{ *os.File }

func (keepOpen) Close() error { return nil }

// reap waits for the program to end, then kills whatever it left behind and
// reaps everything, so the program's pipes reach end of file: the sandbox
// lives exactly as long as its program.
func reap(pid int) console.Status {
	var st console.Status
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(-1, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			break
		}
		if got == pid {
			if ws.Signaled() {
				st.Signal = int(ws.Signal())
			} else {
				st.Code = ws.ExitStatus()
			}
			break
		}
	}
	unix.Kill(-1, unix.SIGKILL)
	for {
		if _, err := unix.Wait4(-1, nil, 0, nil); err == unix.ECHILD {
			return st
		}
	}
}
