package sandbox

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/virt-sandbox/virt-sandbox/config"
	"github.com/virt-sandbox/virt-sandbox/config/guest"
	"github.com/virt-sandbox/virt-sandbox/sandbox/console"
	"github.com/virt-sandbox/virt-sandbox/sandbox/wholefile"
)

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// A remote host (a URI with a transport or a host: qemu+ssh://host/system,
// lxc+tcp://host/) shares no file with the launcher. Its domains name
// only its own files: the paths the user gives (-r, host-bind, --disk)
// are the remote host's, as libvirt's are; the kernel, initrd and LXC init
// are uploaded as volumes (volume.go); the run's config and include files
// travel on the app channel (console/files.go), and so does the program's
// stdio, on libvirt streams.

// remote tells whether the run's libvirt is on another machine.
func (r *run) remote() bool { return !isLocal(r.cfg.URI) }

// upload puts the launcher's files on the remote host, once per content,
// and returns their paths there.
func (r *run) upload(ups ...upload) ([]string, error) {
	pool, err := openPool(r.conn)
	if err != nil {
		return nil, err
	}
	defer pool.Free()
	interrupted, done := r.watchInterrupt()
	defer done()
	paths := make([]string, len(ups))
	for i, u := range ups {
		t := time.Now()
		u.interrupted = interrupted
		p, sent, err := uploadVolume(r.conn, pool, u)
		if err == nil && interrupted() {
			err = errInterrupted
		}
		if err != nil {
			return nil, err
		}
		if sent {
			r.debugf("uploaded the %s to volume %s in %v", u.what, u.name, time.Since(t).Round(time.Millisecond))
		} else {
			r.debugf("the %s is volume %s, uploaded before", u.what, u.name)
		}
		paths[i] = p
	}
	return paths, nil
}

// watchInterrupt takes the caller's SIGINT, SIGTERM, SIGHUP and SIGQUIT
// while an upload runs, which may be long (an image's root on a slow
// link): the upload stops and the run ends with 128+N, as if the program
// had been killed. interrupted tells whether one came; done ends the
// watch, after which the relay takes the signals.
func (r *run) watchInterrupt() (interrupted func() bool, done func()) {
	stop := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-stop:
				return
			case sig := <-r.io.Signals:
				if s, ok := sig.(syscall.Signal); ok && s != syscall.SIGWINCH {
					r.killedBy.CompareAndSwap(0, int32(s))
				}
			}
		}
	}()
	return func() bool { return r.killedBy.Load() != 0 }, func() {
		close(stop)
		<-finished
	}
}

// uploadFile uploads one file under a name keyed by its content.
func (r *run) uploadFile(what, path string, mode os.FileMode) (string, error) {
	name, err := contentName(what, path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	paths, err := r.upload(upload{what: what, path: path, name: name, mode: mode})
	if err != nil {
		return "", err
	}
	return paths[0], nil
}

// rootImage is the path the domain names for the config's root image: the
// file itself locally, its volume on a remote host.
func (r *run) rootImage() (string, error) {
	if !r.remote() {
		return r.cfg.RootImage, nil
	}
	paths, err := r.upload(rootImageUpload(r.cfg.RootImage))
	if err != nil {
		return "", err
	}
	return paths[0], nil
}

// rootImagePrefix starts the volume names of image roots.
const rootImagePrefix = "rootfs-"

// rootImageUpload is the upload of a root image (images.Store.RootImage,
// HEX.squashfs), named by the image digest its name carries. The name is
// short: libvirt's LXC driver gives the path to a loop device, which
// keeps at most 63 bytes of it, and fails on a longer one.
func rootImageUpload(path string) upload {
	digest := strings.TrimSuffix(filepath.Base(path), ".squashfs")
	return upload{what: "image root", path: path, name: rootImagePrefix + digest[:min(len(digest), 16)], mode: 0o644}
}

// PushRootImage puts a root image (images.Store.RootImage) on the remote
// host of uri, unless it is there; it returns the volume's name and
// whether it was uploaded now.
func PushRootImage(uri, path string) (volume string, uploaded bool, err error) {
	u := rootImageUpload(path)
	err = onHostPool(uri, "its runs take images from the store, there is nothing to push", func(conn *libvirt.Connect, pool *libvirt.StoragePool) (err error) {
		_, uploaded, err = uploadVolume(conn, pool, u)
		return err
	})
	return u.name, uploaded, err
}

// HostImages lists the image roots the remote host of uri holds whole,
// as the digest prefixes (16 hex digits) their volumes are named by.
func HostImages(uri string) ([]string, error) {
	var prefixes []string
	err := onHostPool(uri, "list shows its images without -c", func(_ *libvirt.Connect, pool *libvirt.StoragePool) error {
		names, err := poolVolumes(pool)
		for _, n := range names {
			if strings.HasPrefix(n, rootImagePrefix) && !strings.HasSuffix(n, doneSuffix) && slices.Contains(names, n+doneSuffix) {
				prefixes = append(prefixes, strings.TrimPrefix(n, rootImagePrefix))
			}
		}
		return err
	})
	sort.Strings(prefixes)
	return prefixes, err
}

// onHostPool runs f with a connection to the remote host of uri and its
// uploads' pool. A uri of this machine is refused, saying what to do
// here instead (local).
func onHostPool(uri, local string, f func(*libvirt.Connect, *libvirt.StoragePool) error) error {
	if !config.Remote(uri) {
		return fmt.Errorf("%w: -c %s is this machine: %s", config.ErrInvalid, uri, local)
	}
	conn, err := connect(uri)
	if err != nil {
		return err
	}
	defer conn.Close()
	pool, err := openPool(conn)
	if err != nil {
		return err
	}
	defer pool.Free()
	return f(conn, pool)
}

// poolVolumes names the volumes of the uploads' pool.
func poolVolumes(pool *libvirt.StoragePool) ([]string, error) {
	names, err := pool.ListStorageVolumes()
	if err != nil {
		return nil, libvirtError("listing the volumes of pool "+poolName(), err)
	}
	return names, nil
}

// runFiles is the tar stream of the run's files, the config and the
// include files of the state directory, for the init of a remote sandbox.
func (r *run) runFiles() io.Reader {
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(console.WriteTree(pw, r.stateDir, guest.ConfigFile, guest.Includes))
	}()
	return pr
}

// prepareRemoteFiles checks the paths of a config for a remote host: they
// are the remote host's, so only their form can be checked here. What
// the launcher would have to make or read on the remote host is refused.
func (r *run) prepareRemoteFiles() error {
	cfg := r.cfg
	if cfg.Root != "" && !filepath.IsAbs(cfg.Root) {
		return fmt.Errorf("%w: -r %s: on a remote host, give an absolute path of that host", config.ErrInvalid, cfg.Root)
	}
	for _, m := range cfg.Mounts {
		switch {
		case m.Type == config.HostBind && m.Source == "":
			return fmt.Errorf("%w: -m host-bind:%s=: a fresh directory is made on this machine, not on a remote host: give a directory of that host, or use -m ram:%s=SIZE", config.ErrInvalid, m.Target, m.Target)
		case m.Type == config.HostBind && !filepath.IsAbs(m.Source):
			return fmt.Errorf("%w: -m host-bind:%s=%s: on a remote host, give an absolute path of that host", config.ErrInvalid, m.Target, m.Source)
		case m.Type == config.HostImage:
			return fmt.Errorf("%w: -m host-image:%s: an image's filesystem is read by the launcher, which cannot on a remote host: use --disk, or run on that host", config.ErrInvalid, m.Target)
		}
	}
	if cfg.Driver == config.LXC && len(cfg.Disks) > 0 {
		return fmt.Errorf("%w: --disk: an LXC sandbox's disk is a loop device the launcher sets up on its own machine, not on a remote host: use QEMU", config.ErrInvalid)
	}
	for i := range cfg.Disks {
		d := &cfg.Disks[i]
		if !filepath.IsAbs(d.Source) {
			return fmt.Errorf("%w: --disk %s=%s: on a remote host, give an absolute path of that host", config.ErrInvalid, d.Tag, d.Source)
		}
		if d.Format == "" {
			// The image cannot be looked at from here; never let
			// QEMU guess (a guest could make a raw image look like
			// qcow2 with a backing file of the host's).
			d.Format = "raw"
		}
	}
	return r.stageIncludes()
}

// remoteVirtType is KVM where it works on the remote host, else TCG. The
// local probe (sandbox/kvm) cannot run there, and a host may offer KVM
// that does not work (nested set-ups): probeRemoteKVM tells. The verdict
// is kept in the cache per URI for remoteKVMKept.
func remoteVirtType(r *run) (string, error) {
	sum := sha256.Sum256([]byte(r.cfg.URI))
	cache := filepath.Join(CacheDir(), "kvm-remote", hex.EncodeToString(sum[:8]))
	verdict := ""
	if fi, err := os.Stat(cache); err == nil && time.Since(fi.ModTime()) < remoteKVMKept {
		if b, err := os.ReadFile(cache); err == nil {
			verdict = string(b)
		}
	}
	if verdict == "" {
		verdict = "ok"
		if err := probeRemoteKVM(r.conn); err != nil {
			verdict = "no: " + err.Error()
		}
		if os.MkdirAll(filepath.Dir(cache), 0o755) == nil {
			wholefile.WriteBytes(cache, []byte(verdict), 0o644)
		}
	}
	if verdict != "ok" {
		r.debugf("KVM not usable on the remote host (%s): using TCG", strings.TrimPrefix(verdict, "no: "))
		return "qemu", nil
	}
	return "kvm", nil
}

// remoteKVMKept is how long a remote host's KVM verdict is trusted.
const remoteKVMKept = 24 * time.Hour

// remoteKVMTimeout bounds the probe: working KVM takes a fraction of it.
const remoteKVMTimeout = 5 * time.Second

// probeRemoteKVM starts a machine of 16 MiB under KVM with nothing to boot,
// as sandboxes run (host CPU): its firmware, finding nothing, reboots at
// once, which ends the domain (on_reboot is destroy). A KVM that fails
// makes QEMU fail to start, or the firmware hang.
func probeRemoteKVM(conn *libvirt.Connect) error {
	if _, err := conn.GetDomainCapabilities("", "x86_64", "", "kvm", 0); err != nil {
		return errors.New("not offered")
	}
	zero := 0
	d := &libvirtxml.Domain{
		Type:       "kvm",
		Name:       "virt-sandbox-kvm-probe-" + hex.EncodeToString(randomBytes(4)),
		Memory:     &libvirtxml.DomainMemory{Value: 16, Unit: "MiB"},
		OnPoweroff: "destroy", OnReboot: "destroy", OnCrash: "destroy",
		OS: &libvirtxml.DomainOS{
			Type: &libvirtxml.DomainOSType{Arch: "x86_64", Type: "hvm"},
			BIOS: &libvirtxml.DomainBIOS{RebootTimeout: &zero},
		},
		CPU: &libvirtxml.DomainCPU{Mode: "host-passthrough"},
		Devices: &libvirtxml.DomainDeviceList{
			MemBalloon:  &libvirtxml.DomainMemBalloon{Model: "none"},
			Controllers: []libvirtxml.DomainController{{Type: "usb", Model: "none"}},
		},
	}
	x, err := d.Marshal()
	if err != nil {
		return err
	}
	stopped := make(chan struct{})
	var once sync.Once
	cb, err := conn.DomainEventLifecycleRegister(nil, func(_ *libvirt.Connect, dom *libvirt.Domain, ev *libvirt.DomainEventLifecycle) {
		if name, err := dom.GetName(); err == nil && name == d.Name && ev.Event == libvirt.DOMAIN_EVENT_STOPPED {
			once.Do(func() { close(stopped) })
		}
	})
	if err != nil {
		return err
	}
	defer conn.DomainEventDeregister(cb)
	dom, err := conn.DomainCreateXML(x, libvirt.DOMAIN_START_AUTODESTROY)
	if err != nil {
		return errors.New(strings.Join(strings.Fields(libvirtError("starting a machine", err).Error()), " "))
	}
	defer dom.Free()
	select {
	case <-stopped:
		return nil
	case <-time.After(remoteKVMTimeout):
		dom.Destroy()
		return fmt.Errorf("the firmware did not get through its start within %v", remoteKVMTimeout)
	}
}
