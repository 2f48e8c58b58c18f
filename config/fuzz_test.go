package config

import (
	"errors"
	"math/big"
	"strings"
	"testing"
)

// checkFuzzErr holds every parse error to the package's error contract.
func checkFuzzErr(t *testing.T, call string, err error) {
	t.Helper()
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("%s = %v, want an error wrapping ErrInvalid", call, err)
	}
	if strings.ContainsAny(err.Error(), "\n\r") {
		t.Fatalf("%s = %q, want a one-line message", call, err)
	}
}

func FuzzParseMount(f *testing.F) {
	for _, s := range []string{
		"host-bind:/data=/srv/data", "host-bind:/tmp=", "host-bind:/a/../b/=x,ro",
		"host-image:/img=/a.qcow2,format=qcow2,readonly", "guest-bind:/home=/tmp/home/",
		"ram:/tmp=64MiB", "ram:/tmp=3G,ro", "foo:/x=/y", "host-bind:/=/y", "ram:/x=0",
		"host-image:/x=/a,format=raw,format=raw", "host-bind:/x=/a,",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		m, err := ParseMount(spec)
		if err != nil {
			checkFuzzErr(t, "ParseMount", err)
			return
		}
		s := validSandbox()
		s.Mounts = []Mount{m}
		if err := s.Validate(); err != nil {
			t.Fatalf("ParseMount(%q) = %+v, which Validate refuses: %v", spec, m, err)
		}
	})
}

func FuzzParseDisk(f *testing.F) {
	for _, s := range []string{
		"file:data=/var/lib/x.img", "file:db=/x.qcow2,format=qcow2", "file:..=/x",
		"block:a=/x", "file:a=", "file:a=/x,format=vmdk", "file:a=/x,",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		d, err := ParseDisk(spec)
		if err != nil {
			checkFuzzErr(t, "ParseDisk", err)
			return
		}
		s := validSandbox()
		s.Disks = []Disk{d}
		if err := s.Validate(); err != nil {
			t.Fatalf("ParseDisk(%q) = %+v, which Validate refuses: %v", spec, d, err)
		}
	})
}

func FuzzParseNetwork(f *testing.F) {
	for _, s := range []string{
		"dhcp,source=default",
		"source=private,address=192.168.122.1/24%192.168.122.255,address=2001:212::204:2/64,route=2001:212::/16%2001:212::212",
		"address=10.0.0.2/24,route=0.0.0.0/0%10.0.0.1",
		"dhcp,mac=00-11-22-33-44-55,filter=clean-traffic,filter.IP=10.0.0.1",
		"dhcp,address=10.0.0.1/24", "source=x", "dhcp,mac=01:00:5e:00:00:01",
		"address=2001::1/64,route=2001::/16%fe80::1%eth0", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		n, err := ParseNetwork(spec)
		if err != nil {
			checkFuzzErr(t, "ParseNetwork", err)
			return
		}
		s := validSandbox()
		s.Networks = []Network{n}
		if err := s.Validate(); err != nil {
			t.Fatalf("ParseNetwork(%q) = %+v, which Validate refuses: %v", spec, n, err)
		}
	})
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{
		"0", "1", "1025", "512K", "64MiB", "3G", "1T", "2tb", "17179869184T",
		"18446744073709551615", "18446744073709551616", "1.5G", "1\u212a", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseSize(s)
		if err != nil {
			checkFuzzErr(t, "ParseSize", err)
			return
		}
		// Recompute with arbitrary precision, so overflow cannot hide.
		i := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
		if i < 0 {
			i = len(s)
		}
		n, ok := new(big.Int).SetString(s[:i], 10)
		if !ok {
			t.Fatalf("ParseSize(%q) = %d, want an error: no leading number", s, got)
		}
		shift := map[string]uint{"": 0, "b": 0, "k": 10, "m": 20, "g": 30, "t": 40}[strings.TrimSuffix(strings.TrimSuffix(strings.ToLower(s[i:]), "b"), "i")]
		bytes := n.Lsh(n, shift)
		want := bytes.Add(bytes, big.NewInt(1023)).Rsh(bytes, 10)
		if !want.IsUint64() || want.Uint64() != got {
			t.Fatalf("ParseSize(%q) = %d, want %s", s, got, want)
		}
	})
}
