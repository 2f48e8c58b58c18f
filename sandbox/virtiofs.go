package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"libvirt.org/go/libvirtxml"

	"github.com/virt-sandbox/virt-sandbox/config"
	"github.com/virt-sandbox/virt-sandbox/config/guest"
	"github.com/virt-sandbox/virt-sandbox/sandbox/hostdirs"
)

// virtiofsd is the daemon QEMU 7.2 ships. It cannot serve an export
// read-only (nor can libvirt 9.0 ask it to), so read-only shares go
// through readOnlyVirtiofsd, which makes its source read-only host-side.
const virtiofsd = hostdirs.Virtiofsd

// virtiofsdThreads is the size of each virtiofsd's pool of threads.
const virtiofsdThreads = 16

// readOnlyVirtiofsd is the command libvirt runs in place of virtiofsd for
// read-only shares (cmd/virt-sandbox-virtiofsd).
const readOnlyVirtiofsd = "virt-sandbox-virtiofsd"

// virtiofsDaemons finds the daemons of virtiofs shares: virtiofsd and our
// read-only front of it.
func virtiofsDaemons() (readOnly string, err error) {
	if !fileExists(virtiofsd) {
		return "", fmt.Errorf("%s is missing (Debian: apt install qemu-system-common)", virtiofsd)
	}
	return helperPath(readOnlyVirtiofsd)
}

// shareFS chooses how host directories reach a QEMU sandbox of cfg
// launched by uid: 9p unless it asks for virtiofs (--share-fs), which it
// gets where virtiofs can run. 9p is the default because a machine with a
// virtiofs device cannot be saved, so it cannot start from a template.
// lacking is what this host lacks for virtiofs (virtiofsDaemons, the guest
// kernel's module), or nil.
func shareFS(cfg *config.Sandbox, uid int, lacking error) (string, error) {
	if cfg.Kernel.ShareFS != guest.VirtiofsShares {
		return guest.NinePShares, nil
	}
	if unfit := virtiofsUnfit(cfg, uid, lacking); unfit != nil {
		return "", fmt.Errorf("%w: --share-fs virtiofs: %v", config.ErrInvalid, unfit)
	}
	return guest.VirtiofsShares, nil
}

// virtiofsUnfit tells why virtiofs cannot carry the shares of cfg
// launched by uid, or nil.
func virtiofsUnfit(cfg *config.Sandbox, uid int, lacking error) error {
	switch {
	case !isLocal(cfg.URI):
		return errors.New("only for a local URI: the launcher finds virtiofsd on its own host")
	case !strings.Contains(cfg.URI, ":///system") && !isEmbedded(cfg.URI):
		return errors.New("libvirt 9.0 runs virtiofsd only as root: use qemu:///system or qemu:///embed")
	case uid != 0:
		// 9p keeps QEMU, and so file access, the caller's.
		return errors.New("virtiofsd reads the host's files as root, more than a caller other than root may: only root can have it")
	case lacking != nil:
		return lacking
	}
	for _, m := range cfg.Mounts {
		if m.Type == config.HostBind && !m.ReadOnly && m.Source == "/" {
			// It binds the source on itself and pivots into it.
			return fmt.Errorf("virtiofsd cannot export / writable (-m host-bind:%s=/)", m.Target)
		}
	}
	return nil
}

// shares builds a machine's host shares, all of one kind.
type shares struct {
	fs string
	// readOnlyDaemon is the path of readOnlyVirtiofsd.
	readOnlyDaemon string
	// squash: writable 9p shares squash ownership (writableShare).
	squash bool
}

// share is the export of the host directory src under tag. A lasting
// share may be cached for as long as the guest likes: the host's files are
// not expected to change under it (the root, which 9p mounts cache=loose).
func (s shares) share(src, tag string, readonly, lasting bool) libvirtxml.DomainFilesystem {
	if s.fs != guest.VirtiofsShares { // 9p's cache is the init's mount option
		if readonly {
			return ninePShare(src, tag, true)
		}
		return writableShare(src, tag, s.squash)
	}
	daemon := virtiofsd
	if readonly {
		daemon = s.readOnlyDaemon
	}
	f := bindFS(src, tag, false) // <readonly/> is refused by libvirt 9.0
	f.Driver = &libvirtxml.DomainFilesystemDriver{Type: "virtiofs"}
	f.Binary = &libvirtxml.DomainFilesystemBinary{
		Path: daemon,
		// As 9p's passthrough: file capabilities and ACLs show.
		XAttr: "on",
		// QEMU 7.2's virtiofsd serves requests on its queue thread
		// unless given a pool; with one it answers the guest's
		// readahead while the queue thread takes the next requests.
		// Under TCG it read 1 GiB in about 0.6x the time, and walked
		// and read small files no slower (DESIGN.md, "File access
		// under TCG").
		ThreadPool: &libvirtxml.DomainFilesystemBinaryThreadPool{Size: virtiofsdThreads},
	}
	if lasting {
		f.Binary.Cache = &libvirtxml.DomainFilesystemBinaryCache{Mode: "always"}
	}
	// Otherwise virtiofsd's default, auto: what the guest read holds for a
	// second. Not none, which spares the guest's page cache (the copy
	// through it costs most under TCG) but makes the guest refuse shared
	// mappings of every file (mmap MAP_SHARED: ENODEV).
	return f
}

// removeVirtiofsdLogs removes the logs libvirt keeps in dir of the
// virtiofsd of each share of the machine name (NAME-fsN-virtiofsd.log).
func removeVirtiofsdLogs(dir, name string) {
	logs, _ := filepath.Glob(filepath.Join(dir, name+"-fs*-virtiofsd.log"))
	for _, l := range logs {
		os.Remove(l)
	}
}

// sharedMemory is the memory backing vhost-user devices need: virtiofsd
// reads and writes the guest's memory itself.
func sharedMemory() *libvirtxml.DomainMemoryBacking {
	return &libvirtxml.DomainMemoryBacking{
		MemorySource: &libvirtxml.DomainMemorySource{Type: "memfd"},
		MemoryAccess: &libvirtxml.DomainMemoryAccess{Mode: "shared"},
	}
}
