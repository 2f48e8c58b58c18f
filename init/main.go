// Command virt-sandbox-init is PID 1 inside every sandbox, LXC container and
// QEMU machine alike. It prepares the sandbox from the config the launcher
// shared, waits for the launcher on the app channel, runs the program and
// relays its stdio and exit status with the console protocol.
//
// It is built static (CGO_ENABLED=0): nothing it needs has to exist in the
// sandbox's root.
package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/virt-sandbox/virt-sandbox/config"
	"github.com/virt-sandbox/virt-sandbox/config/guest"
	"github.com/virt-sandbox/virt-sandbox/sandbox/console"
)

// boot is the state the steps build up.
type boot struct {
	cfg *config.Sandbox
	// resolved is what the launcher found out or set up for the run,
	// saved beside cfg.
	resolved guest.Resolved
	// channel is app channel 0, where a one-shot run speaks; a service's
	// sandbox has more, each carrying one session at a time.
	channel *os.File
	// openChannel opens app channel i of this driver.
	openChannel func(i int) (*os.File, error)
	guest       *console.Guest
	debug       bool
	start       time.Time
	// ownRun is the sandbox's own /run, held from before the user's mounts.
	ownRun *os.Root
	// rootRun is the root's own /run, which the sandbox's hides, held
	// from before it was hidden (keepRootRun).
	rootRun *os.Root
	// overlaid tells that the root is a tmpfs overlay, which is made
	// read-only again once the mounts are made, unless it is to be
	// writable.
	overlaid bool
	// newRoot is where a QEMU sandbox's root is before it switches to it.
	newRoot string
	// hostGone ends a one-shot sandbox whose launcher went away before
	// the program ended: a QEMU machine restored from a template is not
	// destroyed with the launcher's connection.
	hostGone func()
}

// step is one named stage of bringing the sandbox up; the lists of steps per
// driver read as the boot sequence and are easy to reorder.
type step struct {
	name string
	run  func(*boot) error
}

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case enterArg:
			enterStage(os.Args[2:])
		case holdArg:
			hold()
		}
	}
	// Not dumpable, so that no program of the sandbox may ptrace the
	// init, whatever its uid: a thread of the init that checked a working
	// directory with the program's credentials keeps them, and ptrace
	// judges by the first thread's, which that may be (tests/escape).
	unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	b := &boot{start: time.Now(), debug: os.Getenv(guest.DebugEnv) == "1"}
	if len(os.Args) > 1 && os.Args[1] == guest.LXCArg {
		b.openChannel = openLXCChannel
		os.Exit(b.run(lxcSteps))
	}
	b.openChannel = openVirtioChannel
	b.hostGone = powerOff
	b.run(qemuSteps)
	if b.guest != nil && (b.cfg == nil || b.cfg.Service == nil) {
		b.guest.AwaitHangup(hangupWait)
	}
	// PID 1 of a machine must not exit: that is a kernel panic.
	powerOff()
}

// hangupWait bounds how long a one-shot machine waits for its launcher to
// close the channel (console.Guest.AwaitHangup) before it ends anyway.
const hangupWait = 2 * time.Second

// run performs the steps; a step that fails before the program runs is
// reported to the launcher as a failure (status 125) when the channel is up,
// and on the log console otherwise.
func (b *boot) run(steps []step) int {
	for _, s := range steps {
		t := time.Now()
		err := s.run(b)
		b.logf("%s: %v", s.name, time.Since(t).Round(time.Microsecond))
		if err == nil {
			continue
		}
		var f *console.Failed
		if !errors.As(err, &f) {
			f = &console.Failed{Status: 125, Message: fmt.Sprintf("sandbox init: %s: %v", s.name, err)}
		}
		b.fail(f)
		return f.Status
	}
	return 0
}

// fail reports f to the launcher, waiting for its hello first if need be.
func (b *boot) fail(f *console.Failed) {
	fmt.Fprintf(os.Stderr, "virt-sandbox-init: %s\n", f.Message)
	if b.cfg != nil && b.cfg.Service != nil {
		// Nobody waits on the channel of a service; the log console
		// has the message.
		return
	}
	if b.guest == nil && b.channel != nil {
		g, err := console.Accept(b.channel)
		if err != nil {
			return
		}
		b.guest = g
	}
	if b.guest != nil {
		b.guest.Fail(f)
	}
}

// logf reports a step on the log console when debugging. Nothing is written
// otherwise: nobody may be reading that console.
func (b *boot) logf(format string, args ...any) {
	if b.debug {
		fmt.Fprintf(os.Stderr, "virt-sandbox-init: [%8.3fs] %s\n", time.Since(b.start).Seconds(), fmt.Sprintf(format, args...))
	}
}

// loadConfig reads the config the launcher shared, or sent on the channel.
func loadConfig(b *boot) error {
	if filesOnChannel() {
		if err := receiveFiles(b); err != nil {
			return err
		}
	}
	run, err := config.LoadRun(guest.Dir + "/" + guest.ConfigFile)
	if err != nil {
		return err
	}
	b.cfg, b.resolved = &run.Sandbox, run.Resolved
	b.debug = b.debug || b.cfg.Debug
	return nil
}

// filesOnChannel tells that the launcher sends the run's files on the
// channel: the sandbox is on a remote host and has no config share.
func filesOnChannel() bool { return os.Getenv(guest.FilesEnv) == guest.FilesOnChannel }

// receiveFiles waits for the launcher on the app channel and takes the
// run's files from it, into the sandbox's own /run where the config share
// would be.
func receiveFiles(b *boot) error {
	if err := openChannel0(b); err != nil {
		return err
	}
	if err := handshake(b); err != nil {
		return err
	}
	files := b.guest.Files()
	if files == nil {
		return errors.New("the launcher sent no files: the init and the launcher are of different builds")
	}
	if err := os.MkdirAll(guest.Dir, 0o700); err != nil {
		return err
	}
	root, err := os.OpenRoot(guest.Dir)
	if err != nil {
		return err
	}
	defer root.Close()
	return console.ExtractTree(files, root)
}

// openChannel0 opens the app channel of a one-shot run, the first of a
// service's, unless it is open.
func openChannel0(b *boot) error {
	if b.channel != nil {
		return nil
	}
	ch, err := b.openChannel(0)
	b.channel = ch
	return err
}

// handshake waits for the launcher on the app channel, unless it came
// already.
func handshake(b *boot) error {
	if b.guest != nil {
		return nil
	}
	g, err := console.Accept(b.channel)
	if err != nil {
		return err
	}
	b.guest = g
	return nil
}
