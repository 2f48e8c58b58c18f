package sandbox

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// attachLoop maps a raw image onto a free loop device for an LXC sandbox.
// The device clears itself once the last holder closes it: the returned
// file, which the run keeps open until its domain is gone, and the
// sandbox's own opens. So a killed launcher leaves no loop device either.
func attachLoop(image string) (string, *os.File, error) {
	backing, err := os.OpenFile(image, os.O_RDWR, 0)
	if err != nil {
		return "", nil, err
	}
	defer backing.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return "", nil, fmt.Errorf("loop devices: %w", err)
	}
	defer ctl.Close()
	for range 16 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", nil, fmt.Errorf("no free loop device: %w", err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		f, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			return "", nil, err
		}
		err = unix.IoctlLoopConfigure(int(f.Fd()), &unix.LoopConfig{
			Fd:   uint32(backing.Fd()),
			Info: unix.LoopInfo64{Flags: unix.LO_FLAGS_AUTOCLEAR},
		})
		if err == nil {
			return dev, f, nil
		}
		f.Close()
		// Another process took it between the two calls.
		if !errors.Is(err, unix.EBUSY) {
			return "", nil, fmt.Errorf("%s: %w", dev, err)
		}
	}
	return "", nil, errors.New("no free loop device after 16 tries")
}
