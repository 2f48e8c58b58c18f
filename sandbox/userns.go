package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"

	"github.com/virt-sandbox/virt-sandbox/config"
	"github.com/virt-sandbox/virt-sandbox/config/guest"
)

// userNSSize is how many ids a sandbox's user namespace maps: 0 to 65535,
// the ids of every image's /etc/passwd.
const userNSSize = 65536

// reservedIDsOwner names the entry of /etc/subuid and /etc/subgid that
// callers without one of their own use (root, as a rule):
// tests/setup-host.sh reserves it.
const reservedIDsOwner = "virt-sandbox"

// The files of subordinate id ranges; variables for the unit tests.
var subUIDFile, subGIDFile = "/etc/subuid", "/etc/subgid"

// idRange is one range of subordinate ids of the host.
type idRange struct{ start, count int }

// userNSMap is the mapping of the program's user namespace when the
// config asks for one (nil otherwise): the caller's ranges of subordinate ids,
// else the reserved ones, with the caller's own uid and gid (not root's)
// mapped to themselves so that what the program writes to the caller's
// directories stays the caller's.
func userNSMap(cfg *config.Sandbox) (*guest.IDMap, error) {
	if cfg.Identity.UserNS != config.UserNSOn {
		return nil, nil
	}
	if !isLocal(cfg.URI) {
		return nil, fmt.Errorf("--userns on: the ranges of ids come from this host's /etc/subuid and /etc/subgid, and %s is another host's: run with --userns off", cfg.URI)
	}
	owners := []string{strconv.Itoa(os.Getuid())}
	if u, err := user.Current(); err == nil {
		owners = append([]string{u.Username}, owners...)
	}
	owners = append(owners, reservedIDsOwner)
	uids, err := subordinateIDs(subUIDFile, owners)
	if err != nil {
		return nil, err
	}
	gids, err := subordinateIDs(subGIDFile, owners)
	if err != nil {
		return nil, err
	}
	return &guest.IDMap{UIDs: keepID(os.Getuid(), uids), GIDs: keepID(os.Getgid(), gids)}, nil
}

// subordinateIDs is the first range of at least userNSSize ids in file
// (as /etc/subuid) of the first owner that has one.
func subordinateIDs(file string, owners []string) (idRange, error) {
	b, err := os.ReadFile(file)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return idRange{}, fmt.Errorf("--userns: %w", err)
	}
	for _, owner := range owners {
		if r, ok := rangeOf(string(b), owner); ok {
			return r, nil
		}
	}
	return idRange{}, fmt.Errorf("--userns: %s has no range of %d ids for %s or %s: add one such as %s:700000000:%d (tests/setup-host.sh does), or run with --userns off",
		file, userNSSize, owners[0], reservedIDsOwner, reservedIDsOwner, userNSSize)
}

// rangeOf finds owner's first range of at least userNSSize ids in the
// content of a subordinate id file: lines of OWNER:START:COUNT.
func rangeOf(content, owner string) (idRange, bool) {
	sc := bufio.NewScanner(strings.NewReader(content))
	for sc.Scan() {
		f := strings.Split(strings.TrimSpace(sc.Text()), ":")
		if len(f) != 3 || f[0] != owner {
			continue
		}
		start, err1 := strconv.Atoi(f[1])
		count, err2 := strconv.Atoi(f[2])
		if err1 == nil && err2 == nil && start > 0 && count >= userNSSize {
			return idRange{start, userNSSize}, true
		}
	}
	return idRange{}, false
}

// keepID maps ids 0 to userNSSize-1 onto r, but for the caller's own id,
// which stays itself unless it is root's: root inside is never root
// outside.
func keepID(caller int, r idRange) []guest.IDRange {
	switch {
	case caller == 0:
		return []guest.IDRange{{Inside: 0, Outside: r.start, Count: r.count}}
	case caller >= r.count:
		return []guest.IDRange{{Inside: 0, Outside: r.start, Count: r.count}, {Inside: caller, Outside: caller, Count: 1}}
	}
	return []guest.IDRange{
		{Inside: 0, Outside: r.start, Count: caller},
		{Inside: caller, Outside: caller, Count: 1},
		{Inside: caller + 1, Outside: r.start + caller, Count: r.count - caller - 1},
	}
}
