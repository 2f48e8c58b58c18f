package sandbox

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"
)

// PruneHost removes from the remote host of uri the uploads (boot files,
// image roots) that none of its domains, running or defined, refers to:
// what older launchers and images left there. A run that uploaded a volume
// and has not yet started its domain finds it gone and fails; runs that
// come later upload again. An upload under way (no marker yet, written to
// lately) is left alone. It returns the volumes removed and the bytes
// they held.
func PruneHost(uri string) (removed []string, freed uint64, err error) {
	err = onHostPool(uri, "prune without -c frees the store", func(conn *libvirt.Connect, pool *libvirt.StoragePool) error {
		names, err := poolVolumes(pool)
		if err != nil {
			return err
		}
		used, err := domainsXML(conn)
		if err != nil {
			return err
		}
		for _, name := range names {
			if strings.HasSuffix(name, doneSuffix) {
				continue
			}
			if size, ok := pruneVolume(pool, name, used, slices.Contains(names, name+doneSuffix)); ok {
				removed = append(removed, name)
				freed += size
			}
		}
		return nil
	})
	return removed, freed, err
}

// pruneVolume removes the volume name unless the domains' XML (used)
// names its path or an upload of it may be under way (unmarked, written
// to lately); its marker goes first, so no run takes the volume for whole
// meanwhile. It tells the bytes freed and whether it removed it.
func pruneVolume(pool *libvirt.StoragePool, name, used string, marked bool) (uint64, bool) {
	vol, err := pool.LookupStorageVolByName(name)
	if err != nil {
		return 0, false
	}
	defer vol.Free()
	path, err := vol.GetPath()
	if err != nil || strings.Contains(used, path) {
		return 0, false
	}
	x, err := vol.GetXMLDesc(0)
	var desc libvirtxml.StorageVolume
	if err != nil || desc.Unmarshal(x) != nil {
		return 0, false
	}
	if !marked && writtenWithin(&desc, 2*uploadStall) {
		return 0, false
	}
	if marked {
		if marker, err := pool.LookupStorageVolByName(name + doneSuffix); err == nil {
			marker.Delete(0)
			marker.Free()
		}
	}
	if vol.Delete(0) != nil {
		return 0, false
	}
	var size uint64
	if desc.Allocation != nil {
		size = desc.Allocation.Value
	}
	return size, true
}

// writtenWithin tells whether the volume was modified within d, or its
// time is unknown.
func writtenWithin(desc *libvirtxml.StorageVolume, d time.Duration) bool {
	if desc.Target == nil || desc.Target.Timestamps == nil || desc.Target.Timestamps.Mtime == "" {
		return true
	}
	var sec, nsec int64
	fmt.Sscanf(desc.Target.Timestamps.Mtime, "%d.%d", &sec, &nsec)
	return time.Since(time.Unix(sec, nsec)) < d
}

// domainsXML is the XML of every domain of conn, running or defined, as
// one string to search for volume paths.
func domainsXML(conn *libvirt.Connect) (string, error) {
	doms, err := conn.ListAllDomains(0)
	if err != nil {
		return "", libvirtError("listing the domains", err)
	}
	var all strings.Builder
	for _, dom := range doms {
		if x, err := dom.GetXMLDesc(0); err == nil {
			all.WriteString(x)
		}
		dom.Free()
	}
	return all.String(), nil
}
