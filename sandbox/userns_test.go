package sandbox

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/virt-sandbox/virt-sandbox/config"
	"github.com/virt-sandbox/virt-sandbox/config/guest"
)

func TestRangeOf(t *testing.T) {
	const subuid = "alice:100000:65536\n" +
		"bob:165536:1000\n" + // too small for a namespace
		"bob:300000:70000\n" +
		"1003:400000:65536\n" +
		"broken:x:65536\n" +
		"virt-sandbox:700000000:65536\n"
	for _, tt := range []struct {
		owner string
		want  idRange
		ok    bool
	}{
		{"alice", idRange{100000, 65536}, true},
		{"bob", idRange{300000, 65536}, true},
		{"1003", idRange{400000, 65536}, true},
		{"virt-sandbox", idRange{700000000, 65536}, true},
		{"broken", idRange{}, false},
		{"carol", idRange{}, false},
	} {
		got, ok := rangeOf(subuid, tt.owner)
		if got != tt.want || ok != tt.ok {
			t.Errorf("rangeOf(%q) = %v, %v; want %v, %v", tt.owner, got, ok, tt.want, tt.ok)
		}
	}
}

func TestSubordinateIDs(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "subuid")
	os.WriteFile(file, []byte("alice:100000:65536\nvirt-sandbox:700000000:65536\n"), 0o644)
	// The caller's own range first, then the reserved one.
	if r, err := subordinateIDs(file, []string{"alice", "1000", reservedIDsOwner}); err != nil || r.start != 100000 {
		t.Errorf("alice: %v, %v; want her own range", r, err)
	}
	if r, err := subordinateIDs(file, []string{"root", "0", reservedIDsOwner}); err != nil || r.start != 700000000 {
		t.Errorf("root: %v, %v; want the reserved range", r, err)
	}
	_, err := subordinateIDs(filepath.Join(dir, "missing"), []string{"root", "0", reservedIDsOwner})
	if err == nil || !strings.Contains(err.Error(), "--userns off") {
		t.Errorf("no range: %v; want an error that names --userns off", err)
	}
}

func TestKeepID(t *testing.T) {
	r := idRange{100000, 65536}
	for _, tt := range []struct {
		caller int
		want   []guest.IDRange
	}{
		// Root inside is never root outside.
		{0, []guest.IDRange{{Inside: 0, Outside: 100000, Count: 65536}}},
		{1000, []guest.IDRange{
			{Inside: 0, Outside: 100000, Count: 1000},
			{Inside: 1000, Outside: 1000, Count: 1},
			{Inside: 1001, Outside: 101000, Count: 64535},
		}},
		{70000, []guest.IDRange{{Inside: 0, Outside: 100000, Count: 65536}, {Inside: 70000, Outside: 70000, Count: 1}}},
	} {
		if got := keepID(tt.caller, r); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("keepID(%d) = %v, want %v", tt.caller, got, tt.want)
		}
	}
}

func TestUserNSMap(t *testing.T) {
	cfg := &config.Sandbox{URI: "lxc+ssh://elsewhere/", Identity: config.Identity{UserNS: config.UserNSOn}}
	if _, err := userNSMap(cfg); err == nil || !strings.Contains(err.Error(), "--userns off") {
		t.Errorf("a remote host's sandbox: %v; want an error that names --userns off", err)
	}
	cfg = &config.Sandbox{URI: "lxc:///", Identity: config.Identity{UserNS: config.UserNSOff}}
	if m, err := userNSMap(cfg); err != nil || m != nil {
		t.Errorf("--userns off: %v, map %v; want no map", err, m)
	}
}
