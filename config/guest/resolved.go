package guest

// Resolved is what the launcher found out or set up for one run after the
// user's config, which the init needs beside it: the user's config says
// what was asked, this what the host made of it. The launcher writes both
// in one file (config.Run) under one version. Mounts and disks are keyed
// by their index in the config's lists, as MountTag names them.
type Resolved struct {
	// IDMap is the mapping of the program's user namespace (LXC,
	// --userns on), from the host's ranges of subordinate ids; nil when
	// the program has none.
	IDMap *IDMap `json:"idmap,omitempty"`
	// MountFS holds the filesystem the launcher found in the image of
	// each host-image mount.
	MountFS map[int]string `json:"mount_fs,omitempty"`
	// DiskDevices holds the host block device (a loop device) an LXC
	// sandbox is given for each disk; a QEMU sandbox's disks are found
	// by their tag instead.
	DiskDevices map[int]string `json:"disk_devices,omitempty"`
}

// IDMap maps the ids of a user namespace to the host's.
type IDMap struct {
	UIDs []IDRange `json:"uids"`
	GIDs []IDRange `json:"gids"`
}

// IDRange maps Count ids from Inside on to the host's from Outside on, as
// a line of /proc/PID/uid_map.
type IDRange struct {
	Inside  int `json:"inside"`
	Outside int `json:"outside"`
	Count   int `json:"count"`
}

// HostUID is the host's uid for uid inside the namespace; -1 when it is
// not mapped.
func (m *IDMap) HostUID(uid int) int { return toHost(m.UIDs, uid) }

// HostGID is HostUID for group ids.
func (m *IDMap) HostGID(gid int) int { return toHost(m.GIDs, gid) }

func toHost(ranges []IDRange, id int) int {
	for _, r := range ranges {
		if id >= r.Inside && id < r.Inside+r.Count {
			return r.Outside + id - r.Inside
		}
	}
	return -1
}
