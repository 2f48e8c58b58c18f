package sandbox

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/virt-sandbox/virt-sandbox/config"
	"github.com/virt-sandbox/virt-sandbox/config/guest"
	"github.com/virt-sandbox/virt-sandbox/sandbox/console"
	"github.com/virt-sandbox/virt-sandbox/sandbox/lru"
)

// A QEMU sandbox starts from a template when it can: a machine booted once,
// to where its init has loaded its modules and waits on the run channel,
// and saved by libvirt. Each run restores it with the run's own host paths
// (shares, console log, channel sockets) and tells the init to go on. The
// guest-visible machine is the template's, so what a run adds to it must be
// the same in every run of a template; what differs (disks, networks,
// services) boots cold.
//
// libvirt restores a saved machine only under the name and UUID it was
// saved with, so a template has slots, each its own saved machine, a fixed
// name and UUID, and a lock held by the one run using it.

// maxTemplateSlots bounds the runs a template serves at once; more boot
// cold.
const maxTemplateSlots = 8

// templateTag ends a template's kernel command line: its init waits for
// the run (init: awaitRun).
const templateTag = guest.TemplateEnv + "=1"

// runSocket is where QEMU listens for the run channel of a machine whose
// state directory is stateDir.
func runSocket(stateDir string) string { return filepath.Join(stateDir, "run.sock") }

// templateRefusal tells why a sandbox of cfg boots cold, or "" when it may
// start from a template. Disks and networks are seen by the kernel as it
// boots (partition tables, MAC addresses), and a service's machine lives
// on after its launcher, whose restore cannot autodestroy it.
func templateRefusal(cfg *config.Sandbox) string {
	switch {
	case cfg.Kernel.ColdBoot:
		return "--cold-boot"
	case cfg.Driver != config.QEMU:
		return "not QEMU"
	case !isLocal(cfg.URI) || isEmbedded(cfg.URI):
		return "not a local libvirtd"
	case cfg.Service != nil:
		return "a service"
	case len(cfg.Disks) > 0 || len(cfg.Networks) > 0:
		return "disks or networks"
	}
	for _, m := range cfg.Mounts {
		if m.Type == config.HostImage {
			return "an image mount"
		}
	}
	return ""
}

// unsavable tells why libvirt could not save the machine d, or "": a
// virtiofs share (vhost-user-fs) blocks migration, and so saving, in QEMU
// 7.2; building a template would cost a boot for nothing.
func unsavable(d *libvirtxml.Domain) string {
	for _, f := range d.Devices.Filesystems {
		if f.Driver != nil && f.Driver.Type == "virtiofs" {
			return "virtiofs shares cannot be saved"
		}
	}
	return ""
}

// runChannel is the run channel of a template's machine whose state
// directory is stateDir: its init waits there for the run.
func runChannel(stateDir string) libvirtxml.DomainChannel {
	return libvirtxml.DomainChannel{
		Source: &libvirtxml.DomainChardevSource{UNIX: &libvirtxml.DomainChardevSourceUNIX{Mode: "bind", Path: runSocket(stateDir)}},
		Target: &libvirtxml.DomainChannelTarget{VirtIO: &libvirtxml.DomainChannelTargetVirtIO{Name: guest.RunChannel}},
	}
}

// asTemplate is the machine of plan p as a template's (plan.template).
func (r *run) asTemplate(p *plan) *libvirtxml.Domain {
	tp := *p
	tp.template = true
	return r.drv.describe(r.cfg, &tp)
}

func copyDomain(d *libvirtxml.Domain) (*libvirtxml.Domain, error) {
	xml, err := d.Marshal()
	if err != nil {
		return nil, fmt.Errorf("domain XML: %w", err)
	}
	var c libvirtxml.Domain
	if err := c.Unmarshal(xml); err != nil {
		return nil, fmt.Errorf("domain XML: %w", err)
	}
	return &c, nil
}

// templateKey names the machine t is, whatever run it is for: t without its
// name, UUID and the host paths a restore may change, with the versions
// of libvirt and QEMU, whose saved machines a newer one may not read. The
// kernel and the initrd (content-keyed: the init and the modules) are in
// it by their paths.
func templateKey(t *libvirtxml.Domain, versions string) (string, error) {
	k, err := copyDomain(t)
	if err != nil {
		return "", err
	}
	k.Name, k.UUID, k.Title = "", "", ""
	for i := range k.Devices.Filesystems {
		k.Devices.Filesystems[i].Source = nil
	}
	for i := range k.Devices.Serials {
		k.Devices.Serials[i].Source, k.Devices.Serials[i].Log = nil, nil
	}
	for i := range k.Devices.Channels {
		k.Devices.Channels[i].Source = nil
	}
	xml, err := k.Marshal()
	if err != nil {
		return "", fmt.Errorf("domain XML: %w", err)
	}
	sum := sha256.Sum256([]byte(versions + "\n" + xml))
	return hex.EncodeToString(sum[:8]), nil
}

// templateSlot is one saved machine of a template, held by one run.
type templateSlot struct {
	name, uuid string
	// image is the saved machine.
	image string
	lock  *os.File
}

// slotIdentity is the fixed name and UUID of slot i of template key.
func slotIdentity(key string, i int) (name, uuid string) {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s/%d", key, i))
	sum[6] = sum[6]&0x0f | 0x40 // version 4
	sum[8] = sum[8]&0x3f | 0x80 // RFC 4122 variant
	h := hex.EncodeToString(sum[:16])
	return fmt.Sprintf("virt-sandbox-tpl-%s-%d", key, i), fmt.Sprintf("%s-%s-%s-%s-%s", h[:8], h[8:12], h[12:16], h[16:20], h[20:])
}

// slotPrefix begins the names of template slots' machines.
const slotPrefix = "virt-sandbox-tpl-"

// slotLock is the lock file of the slot whose machine is name, in dir, the
// caller's template cache.
func slotLock(dir, name string) string {
	rest := strings.TrimPrefix(name, slotPrefix)
	cut := strings.LastIndexByte(rest, '-')
	return filepath.Join(dir, rest[:max(cut, 0)], "slot"+rest[max(cut, 0):]+".lock")
}

// takeSlot locks the first free slot of template key in dir.
func takeSlot(dir, key string) (*templateSlot, error) {
	if err := os.MkdirAll(filepath.Join(dir, key), 0o700); err != nil {
		return nil, fmt.Errorf("template cache: %w", err)
	}
	for i := range maxTemplateSlots {
		name, uuid := slotIdentity(key, i)
		lock, err := os.OpenFile(slotLock(dir, name), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("template cache: %w", err)
		}
		if unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
			lock.Close()
			continue
		}
		return &templateSlot{name: name, uuid: uuid, image: strings.TrimSuffix(lock.Name(), ".lock") + ".save", lock: lock}, nil
	}
	return nil, nil
}

// sweepSlots destroys the machines running in slots of dir that no run
// holds: a launcher killed with SIGKILL during the restore left them (a
// restored machine cannot be autodestroyed; once the program runs, the
// init ends it when the launcher's channel closes).
func (r *oneShot) sweepSlots(dir string) {
	doms, err := r.conn.ListAllDomains(libvirt.CONNECT_LIST_DOMAINS_ACTIVE)
	if err != nil {
		return
	}
	for _, dom := range doms {
		if name, err := dom.GetName(); err == nil && strings.HasPrefix(name, slotPrefix) {
			if lock, err := lockPath(slotLock(dir, name), unix.LOCK_EX|unix.LOCK_NB); err == nil {
				r.debugf("destroying %s, left running by a launcher that was killed", name)
				dom.Destroy()
				lock.Close()
			}
		}
		dom.Free()
	}
}

// startFromTemplate starts the run's machine d, of plan p, from a
// template, building the template's slot first when it has none saved.
// It tells whether it did; when not, the machine boots cold.
func (r *oneShot) startFromTemplate(d *libvirtxml.Domain, p *plan) (bool, error) {
	if why := unsavable(d); why != "" {
		r.debugf("booting cold: %s", why)
		return false, nil
	}
	t := time.Now()
	tpl := r.asTemplate(p)
	hv, err := r.conn.GetVersion()
	if err != nil {
		return false, libvirtError("asking QEMU's version", err)
	}
	lv, err := r.conn.GetLibVersion()
	if err != nil {
		return false, libvirtError("asking libvirt's version", err)
	}
	key, err := templateKey(tpl, fmt.Sprintf("libvirt %d qemu %d", lv, hv))
	if err != nil {
		return false, err
	}
	dir := filepath.Join(CacheDir(), "template")
	r.sweepSlots(dir)
	slot, err := takeSlot(dir, key)
	if err != nil || slot == nil {
		return false, err
	}
	r.onCleanup(func() { slot.lock.Close() })
	// The title names the sandbox in virsh list --title.
	tpl.Name, tpl.UUID, tpl.Title = slot.name, slot.uuid, r.cfg.Name
	if !fileExists(slot.image) {
		if err := r.buildTemplate(tpl, slot.image); err != nil {
			// The cold boot says why a machine does not boot in the
			// words it always has, and runs where the cache is full.
			r.debugf("building the template: %v; booting cold", err)
			return false, nil
		}
		r.debugf("template %s built in %v", slot.name, time.Since(t).Round(time.Millisecond))
		trimTemplates(dir)
		t = time.Now()
	}
	if err := r.watchStop(slot.uuid); err != nil {
		return false, err
	}
	xml, err := tpl.Marshal()
	if err != nil {
		return false, fmt.Errorf("domain XML: %w", err)
	}
	r.created = time.Now()
	if err := r.conn.DomainRestoreFlags(slot.image, xml, libvirt.DOMAIN_SAVE_RUNNING); err != nil {
		// A saved machine this QEMU cannot load (damaged, or of
		// another build of the same version) is rebuilt by the next
		// run; this one boots cold.
		r.debugf("%v; booting cold", libvirtError("restoring the template", err))
		os.Remove(slot.image)
		return false, nil
	}
	r.debugf("restored %s in %v", slot.name, time.Since(t).Round(time.Millisecond))
	lru.Touch(slot.image)
	return true, r.resume(slot)
}

// templateBudget bounds the saved machines kept in a template cache (about
// 100 MB each): every template key (machine shape, kernel, init) may have
// up to maxTemplateSlots of them, and an upgrade makes new keys.
const templateBudget = 4 << 30

// trimTemplates removes the saved machines of dir used least recently
// beyond templateBudget, but none a run holds. Their slots stay (a lock
// file each), so a slot never has two lock files two runs could hold.
func trimTemplates(dir string) {
	saves, _ := filepath.Glob(filepath.Join(dir, "*", "slot-*.save"))
	lru.Trim(saves, templateBudget, func(p string) {
		lock, err := lockPath(strings.TrimSuffix(p, ".save")+".lock", unix.LOCK_EX|unix.LOCK_NB)
		if err != nil {
			return
		}
		defer lock.Close()
		os.Remove(p)
	})
}

// buildTemplate boots the template's machine, waits for its init to be
// ready for a run and saves it to image, whole or not at all.
func (r *oneShot) buildTemplate(tpl *libvirtxml.Domain, image string) error {
	xml, err := tpl.Marshal()
	if err != nil {
		return fmt.Errorf("domain XML: %w", err)
	}
	dom, err := r.conn.DomainCreateXML(xml, libvirt.DOMAIN_START_AUTODESTROY)
	if err != nil {
		return libvirtError("starting the template machine", err)
	}
	defer dom.Free()
	fail := func(err error) error {
		dom.Destroy()
		return err
	}
	conn, err := net.DialTimeout("unix", runSocket(r.stateDir), 10*time.Second)
	if err != nil {
		return fail(fmt.Errorf("opening the template's run channel: %w", err))
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(r.startDeadline()))
	if err := console.AwaitReady(conn); err != nil {
		return fail(fmt.Errorf("the template machine did not boot: %w; last seen: %s", err, r.lastSeen()))
	}
	tmp := image + ".tmp"
	if err := dom.SaveFlags(tmp, "", 0); err != nil {
		os.Remove(tmp)
		return fail(libvirtError("saving the template machine", err))
	}
	if err := os.Rename(tmp, image); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("template cache: %w", err)
	}
	return nil
}

// resume takes hold of the machine restored in slot and hands its init
// the run. A restored machine cannot be autodestroyed: every path out of
// Run destroys it.
func (r *oneShot) resume(slot *templateSlot) error {
	r.domUUID = slot.uuid
	r.onCleanup(func() { removeQEMULog(r.cfg.URI, slot.name) })
	dom, err := r.conn.LookupDomainByName(slot.name)
	if err != nil {
		return libvirtError("finding the restored machine", err)
	}
	r.setDomain(dom)
	r.onCleanup(r.destroyIfActive)
	conn, err := net.Dial("unix", runSocket(r.stateDir))
	if err != nil {
		return fmt.Errorf("opening the run channel: %w", err)
	}
	// Open until the run ends: QEMU may drop what it has not yet passed
	// to the guest when the peer hangs up.
	r.onCleanup(func() { conn.Close() })
	m := console.Resume{Time: time.Now()}
	rand.Read(m.Entropy[:])
	if err := console.SendResume(conn, m); err != nil {
		return fmt.Errorf("handing the run to the restored machine: %w", err)
	}
	return nil
}
