package sandbox

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"
)

// Uploads. A domain of a remote host may refer to no file of the
// launcher's machine, so what a sandbox needs from it (a QEMU kernel and
// initrd, the LXC init, an image's root) goes to the remote host as storage
// volumes of one pool, named by their content: each is uploaded once per
// host, and every later run finds it there.
//
// A volume is whole when its marker volume (NAME.done, empty) exists: the
// uploader makes it last. Volumes cannot be renamed, so a half-uploaded
// volume has its final name while the upload runs; another launcher that
// finds it waits for the marker while the volume grows, and takes the
// upload over when it stopped growing (its uploader died).

// defaultPool is the storage pool of uploads unless $VIRT_SANDBOX_POOL
// names another; the launcher makes it, a directory pool in
// DefaultPoolDir, when the host lacks it.
const (
	defaultPool    = "virt-sandbox"
	defaultPoolDir = "/var/lib/libvirt/images/virt-sandbox"
)

// poolName is the storage pool uploads go to.
func poolName() string {
	if p := os.Getenv("VIRT_SANDBOX_POOL"); p != "" {
		return p
	}
	return defaultPool
}

// doneSuffix names a volume's marker.
const doneSuffix = ".done"

// uploadStall is how long a half-uploaded volume may stay the same size
// before another launcher takes the upload over.
const uploadStall = 30 * time.Second

// openPool finds the uploads' pool, making and starting it when missing.
// Launchers racing to make it all end up with the one that was made.
func openPool(conn *libvirt.Connect) (*libvirt.StoragePool, error) {
	name := poolName()
	pool, err := conn.LookupStoragePoolByName(name)
	if err != nil && name == defaultPool && isLibvirtError(err, libvirt.ERR_NO_STORAGE_POOL) {
		pool, err = definePool(conn, name)
	}
	if err != nil {
		return nil, libvirtError("storage pool "+name, err)
	}
	if active, err := pool.IsActive(); err == nil && !active {
		if err := pool.Create(0); err != nil {
			if active, _ := pool.IsActive(); !active {
				pool.Free()
				return nil, libvirtError("starting storage pool "+name, err)
			}
		}
	}
	return pool, nil
}

func definePool(conn *libvirt.Connect, name string) (*libvirt.StoragePool, error) {
	x, err := (&libvirtxml.StoragePool{
		Type:   "dir",
		Name:   name,
		Target: &libvirtxml.StoragePoolTarget{Path: defaultPoolDir, Permissions: &libvirtxml.StoragePoolTargetPermissions{Mode: "0755"}},
	}).Marshal()
	if err != nil {
		return nil, err
	}
	pool, err := conn.StoragePoolDefineXML(x, 0)
	if err != nil {
		// Another launcher defined it first.
		return conn.LookupStoragePoolByName(name)
	}
	if err := pool.Build(0); err != nil {
		pool.Free()
		return nil, err
	}
	pool.SetAutostart(true)
	return pool, nil
}

func isLibvirtError(err error, code libvirt.ErrorNumber) bool {
	var le libvirt.Error
	return errors.As(err, &le) && le.Code == code
}

// upload is a file of the launcher's machine a remote host needs.
type upload struct {
	// what names it in messages: "kernel", "initrd", "init".
	what string
	path string
	// name is its volume's name, keyed by its content.
	name string
	mode os.FileMode
	// interrupted, when set, tells that the caller wants the upload to
	// stop: it is asked between chunks.
	interrupted func() bool
}

// errInterrupted ends an upload the caller interrupted.
var errInterrupted = errors.New("interrupted")

// contentName is a volume name for the file at path: prefix and its
// content's hash.
func contentName(prefix, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return prefix + "-" + hex.EncodeToString(h.Sum(nil)[:16]), nil
}

// uploadVolume makes sure u is whole in pool and returns its path on the
// remote host; uploaded tells whether this call sent it.
func uploadVolume(conn *libvirt.Connect, pool *libvirt.StoragePool, u upload) (path string, uploaded bool, err error) {
	for {
		if u.interrupted != nil && u.interrupted() {
			return "", false, errInterrupted
		}
		if done, err := pool.LookupStorageVolByName(u.name + doneSuffix); err == nil {
			vol, err := pool.LookupStorageVolByName(u.name)
			if err != nil {
				// Removed by hand, and its marker left: upload again.
				done.Delete(0)
				done.Free()
				continue
			}
			done.Free()
			defer vol.Free()
			path, err := vol.GetPath()
			return path, false, err
		}
		fi, err := os.Stat(u.path)
		if err != nil {
			return "", false, fmt.Errorf("%s: %w", u.what, err)
		}
		vol, err := pool.StorageVolCreateXML(volumeXML(u.name, uint64(fi.Size()), u.mode), 0)
		if err == nil {
			defer vol.Free()
			if err := sendVolume(conn, vol, u); err != nil {
				vol.Delete(0)
				return "", false, libvirtError("uploading the "+u.what+" to volume "+u.name, err)
			}
			if done, err := pool.StorageVolCreateXML(volumeXML(u.name+doneSuffix, 0, 0o644), 0); err == nil {
				done.Free()
			} else if !isLibvirtError(err, libvirt.ERR_STORAGE_VOL_EXIST) {
				return "", false, libvirtError("marking volume "+u.name+" whole", err)
			}
			path, err := vol.GetPath()
			return path, true, err
		}
		if !isLibvirtError(err, libvirt.ERR_STORAGE_VOL_EXIST) {
			return "", false, libvirtError("volume for the "+u.what, err)
		}
		awaitUpload(pool, u)
	}
}

// awaitUpload waits for another launcher's upload of u to end: until its
// marker is there, the volume is gone, or it stopped growing, in which
// case it is removed for the caller to upload it again; or until the
// caller interrupts.
func awaitUpload(pool *libvirt.StoragePool, u upload) {
	name := u.name
	var last uint64
	lastChange := time.Now()
	for {
		if u.interrupted != nil && u.interrupted() {
			return
		}
		if done, err := pool.LookupStorageVolByName(name + doneSuffix); err == nil {
			done.Free()
			return
		}
		vol, err := pool.LookupStorageVolByName(name)
		if err != nil {
			return
		}
		info, err := vol.GetInfo()
		if err == nil && info.Allocation != last {
			last, lastChange = info.Allocation, time.Now()
		}
		if time.Since(lastChange) > uploadStall {
			vol.Delete(0)
			vol.Free()
			return
		}
		vol.Free()
		time.Sleep(200 * time.Millisecond)
	}
}

func volumeXML(name string, size uint64, mode os.FileMode) string {
	x, _ := (&libvirtxml.StorageVolume{
		Name:     name,
		Capacity: &libvirtxml.StorageVolumeSize{Value: size, Unit: "B"},
		Target: &libvirtxml.StorageVolumeTarget{
			Format:      &libvirtxml.StorageVolumeTargetFormat{Type: "raw"},
			Permissions: &libvirtxml.StorageVolumeTargetPermissions{Mode: fmt.Sprintf("%04o", mode)},
		},
	}).Marshal()
	return x
}

// sendVolume uploads u's file into vol.
func sendVolume(conn *libvirt.Connect, vol *libvirt.StorageVol, u upload) error {
	f, err := os.Open(u.path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	st, err := conn.NewStream(0)
	if err != nil {
		return err
	}
	defer st.Free()
	if err := vol.Upload(st, 0, uint64(fi.Size()), 0); err != nil {
		return err
	}
	buf := make([]byte, 256<<10)
	for {
		if u.interrupted != nil && u.interrupted() {
			st.Abort()
			return errInterrupted
		}
		n, rerr := f.Read(buf)
		for p := buf[:n]; len(p) > 0; {
			k, err := st.Send(p)
			if err != nil {
				st.Abort()
				return err
			}
			p = p[k:]
		}
		if rerr == io.EOF {
			return st.Finish()
		}
		if rerr != nil {
			st.Abort()
			return rerr
		}
	}
}
