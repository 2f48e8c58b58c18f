package config

import (
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// checkErr fails unless err wraps ErrInvalid, is one line and contains want,
// which should be the offending value as the message prints it.
func checkErr(t *testing.T, call string, err error, want string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s = nil error, want one containing %q", call, want)
		return
	}
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("%s = %v, want an error wrapping ErrInvalid", call, err)
	}
	if msg := err.Error(); strings.ContainsAny(msg, "\n\r") {
		t.Errorf("%s = %q, want a one-line message", call, msg)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("%s = %q, want it to contain %q", call, err, want)
	}
}

func TestParseSize(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    uint64
		wantErr string
	}{
		{in: "0", want: 0},
		{in: "1", want: 1},
		{in: "512", want: 1},
		{in: "1023", want: 1},
		{in: "1024", want: 1},
		{in: "1025", want: 2},
		{in: "2048B", want: 2},
		{in: "2049b", want: 3},
		{in: "1K", want: 1},
		{in: "512k", want: 512},
		{in: "7KB", want: 7},
		{in: "7KiB", want: 7},
		{in: "7kib", want: 7},
		{in: "64M", want: 64 << 10},
		{in: "64MiB", want: 64 << 10},
		{in: "64mb", want: 64 << 10},
		{in: "007M", want: 7 << 10},
		{in: "3G", want: 3 << 20},
		{in: "2049M", want: 2049 << 10},
		{in: "3221225472", want: 3 << 20},
		{in: "1T", want: 1 << 30},
		{in: "2TiB", want: 2 << 30},
		{in: "17179869183T", want: 17179869183 << 30},
		{in: "18446744073709551615", want: 1 << 54},
		{in: "18446744073709551615K", want: 18446744073709551615},

		{in: "", wantErr: `size "": want a whole number`},
		{in: "K", wantErr: `size "K"`},
		{in: "-1", wantErr: `size "-1"`},
		{in: "+1", wantErr: `size "+1"`},
		{in: " 1", wantErr: `size " 1"`},
		{in: "1 G", wantErr: `unknown unit " G"`},
		{in: "1.5G", wantErr: `unknown unit ".5G"`},
		{in: "1X", wantErr: `unknown unit "X"`},
		{in: "1iB", wantErr: `unknown unit "iB"`},
		{in: "1KiBB", wantErr: `unknown unit "KiBB"`},
		{in: "1\u212a", wantErr: "unknown unit \"\u212a\""},
		{in: "1P", wantErr: `unknown unit "P"`},
		{in: "17179869184T", wantErr: `size "17179869184T": too large`},
		{in: "18014398509481984M", wantErr: `size "18014398509481984M": too large`},
		{in: "18446744073709551616", wantErr: `size "18446744073709551616": too large`},
	} {
		got, err := ParseSize(tt.in)
		if tt.wantErr != "" {
			checkErr(t, "ParseSize("+strconv.Quote(tt.in)+")", err, tt.wantErr)
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v, want %d, nil", tt.in, got, err, tt.want)
		}
	}
}

func TestParseMemory(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    uint64
		wantErr string
	}{
		// A bare number is MiB, as for qemu -m and virt-install --memory.
		{in: "300", want: 300},
		{in: "1", want: 1},
		{in: "512M", want: 512},
		{in: "2G", want: 2048},
		{in: "2gib", want: 2048},
		{in: "1T", want: 1 << 20},
		// Other units round up to whole MiB: never less than asked.
		{in: "1536K", want: 2},
		{in: "1048576B", want: 1},
		{in: "1048577b", want: 2},

		{in: "0", wantErr: `--memory "0": must be more than 0`},
		{in: "0G", wantErr: `--memory "0G": must be more than 0`},
		{in: "", wantErr: `--memory "": want a whole number`},
		{in: "lots", wantErr: `--memory "lots": want a whole number`},
		{in: "1.5G", wantErr: `--memory "1.5G": unknown unit ".5G"`},
		{in: "18014398509481984G", wantErr: `--memory "18014398509481984G": too large`},
	} {
		got, err := ParseMemory(tt.in)
		if tt.wantErr != "" {
			checkErr(t, "ParseMemory("+strconv.Quote(tt.in)+")", err, tt.wantErr)
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseMemory(%q) = %d, %v, want %d, nil", tt.in, got, err, tt.want)
		}
	}
}

func TestParseMount(t *testing.T) {
	for _, tt := range []struct {
		spec    string
		want    Mount
		wantErr string
	}{
		{spec: "host-bind:/data=/srv/data", want: Mount{Type: HostBind, Target: "/data", Source: "/srv/data"}},
		{spec: "host-bind:/tmp=", want: Mount{Type: HostBind, Target: "/tmp"}},
		{spec: "host-bind:/a/b/../c/=rel/dir,ro", want: Mount{Type: HostBind, Target: "/a/c", Source: "rel/dir", ReadOnly: true}},
		{spec: "host-bind://x=/y=z", want: Mount{Type: HostBind, Target: "/x", Source: "/y=z"}},
		{spec: "host-bind:/x\n=/y", wantErr: `target "/x\n": contains the control character '\n'`},
		{spec: "host-image:/img=/var/a.img", want: Mount{Type: HostImage, Target: "/img", Source: "/var/a.img"}},
		{spec: "host-bind:/x=/a,,b", want: Mount{Type: HostBind, Target: "/x", Source: "/a,b"}},
		{spec: "host-bind:/x=/a,,b,ro", want: Mount{Type: HostBind, Target: "/x", Source: "/a,b", ReadOnly: true}},
		{spec: "host-bind:/x,,y=/a,,", want: Mount{Type: HostBind, Target: "/x,y", Source: "/a,"}},
		{spec: "host-image:/img=/var/a.qcow2,format=qcow2,readonly", want: Mount{Type: HostImage, Target: "/img", Source: "/var/a.qcow2", Format: "qcow2", ReadOnly: true}},
		{spec: "host-image:/img=a.raw,ro,format=raw", want: Mount{Type: HostImage, Target: "/img", Source: "a.raw", Format: "raw", ReadOnly: true}},
		{spec: "guest-bind:/home=/tmp/home/", want: Mount{Type: GuestBind, Target: "/home", Source: "/tmp/home"}},
		{spec: "ram:/tmp=512", want: Mount{Type: RAM, Target: "/tmp", SizeKiB: 1}},
		{spec: "ram:/tmp=64MiB", want: Mount{Type: RAM, Target: "/tmp", SizeKiB: 64 << 10}},
		{spec: "ram:/tmp=3G,ro", want: Mount{Type: RAM, Target: "/tmp", SizeKiB: 3 << 20, ReadOnly: true}},
		{spec: "ram:/big=4T", want: Mount{Type: RAM, Target: "/big", SizeKiB: 4 << 30}},

		{spec: "foo:/x=/y", wantErr: `-m "foo:/x=/y": unknown mount type "foo" (want host-bind, host-image, guest-bind or ram)`},
		{spec: "", wantErr: `-m "": missing mount type`},
		{spec: "/x=/y", wantErr: `-m "/x=/y": missing mount type`},
		{spec: "host-bind:/x", wantErr: `missing "=" in "/x"`},
		{spec: "host-bind:/x,ro", wantErr: `missing "=" in "/x"`},
		{spec: "host-bind:=/y", wantErr: `target "": empty`},
		{spec: "host-bind:x=/y", wantErr: `target "x": not absolute`},
		{spec: "host-bind:/=/y", wantErr: `target "/": cannot mount over /`},
		{spec: "host-bind:/a/..=/y", wantErr: `target "/a/..": cannot mount over /`},
		{spec: "host-bind:x\n=/y", wantErr: `target "x\n": not absolute`},
		{spec: "host-bind:/x\x00=/y", wantErr: `target "/x\x00": contains the control character '\x00'`},
		{spec: "host-bind:/x=/y\x00", wantErr: `source "/y\x00": contains the control character '\x00'`},
		{spec: "host-bind:/x=/a\nb", wantErr: `source "/a\nb": contains the control character '\n'`},
		{spec: "host-bind:/dev=/y", wantErr: `target "/dev": the sandbox's own /dev, /proc and /sys cannot be mounted over`},
		{spec: "host-bind:/proc/sys=/y", wantErr: `target "/proc/sys": the sandbox's own`},
		{spec: "ram:/sys=1M", wantErr: `target "/sys": the sandbox's own`},
		{spec: "host-image:/x=", wantErr: `source "": empty`},
		{spec: "host-image:/x=/a,format=vmdk", wantErr: `unknown format "vmdk" (want raw or qcow2)`},
		{spec: "host-image:/x=/a,format=", wantErr: `unknown format ""`},
		{spec: "host-image:/x=/a,format=raw,format=qcow2", wantErr: `option "format=qcow2": format given twice`},
		{spec: "host-image:/x=/a,compress", wantErr: `unknown option "compress" (want ro, readonly or format=)`},
		{spec: "host-bind:/x=/a,format=raw", wantErr: `option "format=raw": only host-image mounts have a format`},
		{spec: "host-bind:/x=/a,rw", wantErr: `unknown option "rw" (want ro or readonly)`},
		{spec: "host-bind:/x=/a,", wantErr: `-m "host-bind:/x=/a,": empty option`},
		{spec: "host-bind:/x=/a,,ro", want: Mount{Type: HostBind, Target: "/x", Source: "/a,ro"}},
		{spec: "guest-bind:/x=rel", wantErr: `source "rel": not absolute`},
		{spec: "guest-bind:/x=", wantErr: `source "": empty`},
		{spec: "ram:/tmp=0", wantErr: `size "0": must be more than 0`},
		{spec: "ram:/tmp=0K", wantErr: `size "0K": must be more than 0`},
		{spec: "ram:/tmp=", wantErr: `size ""`},
		{spec: "ram:/tmp=12X", wantErr: `size "12X": unknown unit "X"`},
		{spec: "ram:/tmp=99999999999T", wantErr: `size "99999999999T": too large`},
		{spec: "ram:/=1M", wantErr: `target "/"`},
	} {
		got, err := ParseMount(tt.spec)
		if tt.wantErr != "" {
			checkErr(t, "ParseMount("+strconv.Quote(tt.spec)+")", err, tt.wantErr)
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseMount(%q) = %+v, %v, want %+v, nil", tt.spec, got, err, tt.want)
		}
	}
}

func TestParseDisk(t *testing.T) {
	for _, tt := range []struct {
		spec    string
		want    Disk
		wantErr string
	}{
		{spec: "file:data=/var/lib/x.img", want: Disk{Tag: "data", Source: "/var/lib/x.img"}},
		{spec: "file:db.1_x-y=/x.qcow2,format=qcow2", want: Disk{Tag: "db.1_x-y", Source: "/x.qcow2", Format: "qcow2"}},
		{spec: "file:A=rel/path,format=raw", want: Disk{Tag: "A", Source: "rel/path", Format: "raw"}},
		{spec: "file:" + strings.Repeat("t", 20) + "=/x", want: Disk{Tag: strings.Repeat("t", 20), Source: "/x"}},

		{spec: "block:a=/x", wantErr: `--disk "block:a=/x": unknown disk type "block" (want file)`},
		{spec: "a=/x", wantErr: `missing disk type`},
		{spec: "file:a", wantErr: `missing "=" in "a"`},
		{spec: "file:=/x", wantErr: `tag "": want 1-20 letters`},
		{spec: "file:a/b=/x", wantErr: `tag "a/b"`},
		{spec: "file:..=/x", wantErr: `tag ".."`},
		{spec: "file:.=/x", wantErr: `tag "."`},
		{spec: "file:_a=/x", wantErr: `tag "_a"`},
		{spec: "file:a b=/x", wantErr: `tag "a b"`},
		{spec: "file:" + strings.Repeat("t", 21) + "=/x", wantErr: `tag "` + strings.Repeat("t", 21) + `"`},
		{spec: "file:a=", wantErr: `source "": empty`},
		{spec: "file:a=/x,,y.img,format=raw", want: Disk{Tag: "a", Source: "/x,y.img", Format: "raw"}},
		{spec: "file:a=/x\x00", wantErr: `source "/x\x00": contains the control character '\x00'`},
		{spec: "file:a=/x,format=vmdk", wantErr: `unknown format "vmdk"`},
		{spec: "file:a=/x,format=raw,format=raw", wantErr: `option "format=raw": format given twice`},
		{spec: "file:a=/x,ro", wantErr: `unknown option "ro" (want format=)`},
		{spec: "file:a=/x,", wantErr: `empty option`},
	} {
		got, err := ParseDisk(tt.spec)
		if tt.wantErr != "" {
			checkErr(t, "ParseDisk("+strconv.Quote(tt.spec)+")", err, tt.wantErr)
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseDisk(%q) = %+v, %v, want %+v, nil", tt.spec, got, err, tt.want)
		}
	}
}

func TestParseNetwork(t *testing.T) {
	for _, tt := range []struct {
		spec    string
		want    Network
		wantErr string
	}{
		{spec: "dhcp", want: Network{DHCP: true}},
		{spec: "dhcp,source=default", want: Network{DHCP: true, Source: "default"}},
		{
			spec: "source=private,address=192.168.122.1/24%192.168.122.255,address=2001:212::204:2/64,route=2001:212::/16%2001:212::212",
			want: Network{
				Source:    "private",
				Addresses: []string{"192.168.122.1/24%192.168.122.255", "2001:212::204:2/64"},
				Routes:    []Route{{Dest: "2001:212::/16", Gateway: "2001:212::212"}},
			},
		},
		{
			// The original's own example: a destination with host bits set.
			spec: "address=10.0.0.2/24,route=192.168.122.255/24%10.0.0.1,route=0.0.0.0/0%10.0.0.1",
			want: Network{
				Addresses: []string{"10.0.0.2/24"},
				Routes:    []Route{{Dest: "192.168.122.255/24", Gateway: "10.0.0.1"}, {Dest: "0.0.0.0/0", Gateway: "10.0.0.1"}},
			},
		},
		{spec: "dhcp,mac=00-11-22-33-44-55", want: Network{DHCP: true, MAC: "00:11:22:33:44:55"}},
		{spec: "mac=AA:BB:CC:DD:EE:F0,dhcp", want: Network{DHCP: true, MAC: "aa:bb:cc:dd:ee:f0"}},
		{
			spec: "dhcp,filter=clean-traffic,filter.IP=10.0.0.1,filter.CTRL_IP_LEARNING=none",
			want: Network{DHCP: true, Filter: "clean-traffic", FilterParams: map[string]string{"IP": "10.0.0.1", "CTRL_IP_LEARNING": "none"}},
		},
		{
			// Parameters may come before the filter they belong to.
			spec: "filter.IP=10.0.0.1,dhcp,filter=clean-traffic",
			want: Network{DHCP: true, Filter: "clean-traffic", FilterParams: map[string]string{"IP": "10.0.0.1"}},
		},

		{spec: "user", want: Network{User: true, DHCP: true}},
		{spec: "user,dhcp,mac=52:54:00:01:02:03", want: Network{User: true, DHCP: true, MAC: "52:54:00:01:02:03"}},
		{spec: "user,user", wantErr: `-N "user,user": user given twice`},
		{spec: "user=1", wantErr: `option "user=1": user takes no value`},
		{spec: "user,source=default", wantErr: `user cannot be combined with source=`},
		{spec: "user,address=10.0.2.20/24", wantErr: `user cannot be combined with source=`},
		{spec: "user,filter=clean-traffic", wantErr: `user cannot be combined with source=`},
		{spec: "user,route=10.0.0.0/8%10.0.2.2", wantErr: `user cannot be combined with source=`},
		{spec: "", wantErr: `-N "": empty`},
		{spec: "source=default", wantErr: `-N "source=default": needs dhcp, user or address=`},
		{spec: "dhcp,address=10.0.0.1/24", wantErr: `dhcp cannot be combined with addresses ["10.0.0.1/24"]`},
		{spec: "address=10.0.0.1/24,dhcp", wantErr: `-N "address=10.0.0.1/24,dhcp": dhcp cannot be combined`},
		{spec: "dhcp,route=10.0.0.0/8%10.0.0.1", wantErr: `-N "dhcp,route=10.0.0.0/8%10.0.0.1": route= needs address=`},
		{spec: "address=10.0.0.1/24,route=10.0.0.0/8", wantErr: `route "10.0.0.0/8": missing gateway`},
		{spec: "address=10.0.0.1/24,route=10.0.0.0/8%", wantErr: `route "10.0.0.0/8%": missing gateway`},
		{spec: "address=10.0.0.1/24,route=10.0.0.0%10.0.0.1", wantErr: `destination "10.0.0.0": want NET/PREFIX`},
		{spec: "address=10.0.0.1/24,route=10.0.0.0/8%gw", wantErr: `gateway "gw": not an IP address`},
		{spec: "address=10.0.0.1/24,route=10.0.0.0/8%fe80::1", wantErr: `gateway "fe80::1": not the same IP version as destination "10.0.0.0/8"`},
		{spec: "address=2001::1/64,route=2001::/16%fe80::1%eth0", wantErr: `gateway "fe80::1%eth0": not an IP address`},
		{spec: "address=10.0.0.1", wantErr: `address "10.0.0.1": want IP/PREFIX`},
		{spec: "address=10.0.0.1/33", wantErr: `address "10.0.0.1/33"`},
		{spec: "address=host/24", wantErr: `address "host/24"`},
		{spec: "address=", wantErr: `address ""`},
		{spec: "address=10.0.0.1/24%10.0.0", wantErr: `broadcast "10.0.0": not an IPv4 address`},
		{spec: "address=10.0.0.1/24%::1", wantErr: `broadcast "::1": not an IPv4 address`},
		{spec: "address=2001::1/64%10.0.0.255", wantErr: `address "2001::1/64%10.0.0.255": a broadcast address needs an IPv4 address`},
		{spec: "dhcp,mac=zz", wantErr: `mac "zz": not a MAC address`},
		{spec: "dhcp,mac=01:00:5e:00:00:01", wantErr: `mac "01:00:5e:00:00:01": multicast`},
		{spec: "dhcp,mac=00:00:00:00:00:00", wantErr: `mac "00:00:00:00:00:00": all zeros`},
		{spec: "dhcp,mac=00:00:5e:00:53:01:00:00", wantErr: `mac "00:00:5e:00:53:01:00:00": not a 6-byte`},
		{spec: "dhcp,mac=", wantErr: `mac "": not a MAC address`},
		{spec: "dhcp,mac=00:11:22:33:44:55,mac=00:11:22:33:44:56", wantErr: `mac="00:11:22:33:44:56": mac given twice`},
		{spec: "dhcp,bogus=1", wantErr: `unknown option "bogus=1"`},
		{spec: "dhcp,bogus", wantErr: `unknown option "bogus"`},
		{spec: "dhcp,source", wantErr: `unknown option "source"`},
		{spec: "dhcp,filter.IP=1.2.3.4", wantErr: `filter.KEY= needs filter=`},
		{spec: "dhcp,filter=x,filter.I-P=1", wantErr: `filter parameter "I-P": want letters`},
		{spec: "dhcp,filter=x,filter.=1", wantErr: `filter parameter ""`},
		{spec: "dhcp,filter=x,filter.IP=", wantErr: `filter parameter "IP": empty value`},
		{spec: "dhcp,filter=x,filter.IP=1,filter.IP=2", wantErr: `filter parameter "IP" given twice`},
		{spec: "dhcp,filter=", wantErr: `filter=: empty value`},
		{spec: "dhcp,source=a,source=b", wantErr: `source="b": source given twice`},
		{spec: "dhcp,source=", wantErr: `source=: empty value`},
		{spec: "dhcp,dhcp", wantErr: `dhcp given twice`},
		{spec: "dhcp=yes", wantErr: `option "dhcp=yes": dhcp takes no value`},
		{spec: "dhcp,,source=x", wantErr: `empty option`},
		{spec: "dhcp,source=a,source=b\nc", wantErr: `-N "dhcp,source=a,source=b\nc": source="b\nc"`},
	} {
		got, err := ParseNetwork(tt.spec)
		if tt.wantErr != "" {
			checkErr(t, "ParseNetwork("+strconv.Quote(tt.spec)+")", err, tt.wantErr)
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseNetwork(%q) = %+v, %v, want %+v, nil", tt.spec, got, err, tt.want)
		}
	}
}

func TestParseEnv(t *testing.T) {
	for _, tt := range []struct {
		spec    string
		wantErr string
	}{
		{spec: "FOO=bar"},
		{spec: "_x="},
		{spec: "A1=b=c=d"},
		{spec: "PATH=/bin:/usr/bin"},
		{spec: "MSG=hello\nworld"},

		{spec: "FOO", wantErr: `-e "FOO": missing "="`},
		{spec: "", wantErr: `-e "": missing "="`},
		{spec: "=bar", wantErr: `name "": want letters`},
		{spec: "1FOO=x", wantErr: `name "1FOO"`},
		{spec: "FO-O=x", wantErr: `name "FO-O"`},
		{spec: "FOO BAR=x", wantErr: `name "FOO BAR"`},
		{spec: "FOO\n=x", wantErr: `name "FOO\n"`},
		{spec: "A=b\x00c", wantErr: `-e "A=b\x00c": value: contains a NUL byte`},
	} {
		got, err := ParseEnv(tt.spec)
		if tt.wantErr != "" {
			checkErr(t, "ParseEnv("+strconv.Quote(tt.spec)+")", err, tt.wantErr)
			continue
		}
		if err != nil || got != tt.spec {
			t.Errorf("ParseEnv(%q) = %q, %v, want %q, nil", tt.spec, got, err, tt.spec)
		}
	}
}

func TestParseSecurity(t *testing.T) {
	for _, tt := range []struct {
		spec    string
		want    Security
		wantErr string
	}{
		{spec: "dynamic", want: Security{Label: "dynamic"}},
		{spec: "inherit", want: Security{Label: "inherit"}},
		{spec: "static,label=system_u:system_r:svirt_t:s0", want: Security{Label: "static", Value: "system_u:system_r:svirt_t:s0"}},
		// SELinux category sets contain commas; label= keeps them.
		{spec: "static,label=system_u:system_r:svirt_t:s0:c412,c355", want: Security{Label: "static", Value: "system_u:system_r:svirt_t:s0:c412,c355"}},

		{spec: "", wantErr: `-s "": empty`},
		{spec: "label=x", wantErr: `-s "label=x": no mode`},
		{spec: "label=x,static", wantErr: `-s "label=x,static": no mode`},
		{spec: "dynamic,label=x", wantErr: `label= needs static, not "dynamic"`},
		{spec: "inherit,label=x", wantErr: `label= needs static, not "inherit"`},
		{spec: "static", wantErr: `-s "static": static needs a label`},
		{spec: "static,label=", wantErr: `static needs a label`},
		{spec: "static,label=a\x00b", wantErr: `label "a\x00b": contains a NUL byte`},
		{spec: "static,dynamic", wantErr: `"dynamic" after "static": want only one`},
		{spec: "dynamic,dynamic", wantErr: `"dynamic" after "dynamic"`},
		{spec: "bogus", wantErr: `unknown option "bogus"`},
		{spec: "Dynamic", wantErr: `unknown option "Dynamic"`},
		{spec: "dynamic,", wantErr: `empty option`},
		{spec: ",dynamic", wantErr: `empty option`},
	} {
		got, err := ParseSecurity(tt.spec)
		if tt.wantErr != "" {
			checkErr(t, "ParseSecurity("+strconv.Quote(tt.spec)+")", err, tt.wantErr)
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseSecurity(%q) = %+v, %v, want %+v, nil", tt.spec, got, err, tt.want)
		}
	}
}

// The parsers' results must pass Validate: the launcher validates the whole
// config after parsing, and a parser that accepts what Validate refuses
// would report the user's mistake with the wrong words.
func TestParsedValidates(t *testing.T) {
	s := validSandbox()
	for _, spec := range []string{"host-bind:/a=", "host-image:/b=/x,format=qcow2,ro", "guest-bind:/c=/d/", "ram:/e=1"} {
		m, err := ParseMount(spec)
		if err != nil {
			t.Fatalf("ParseMount(%q) = %v, want nil", spec, err)
		}
		s.Mounts = append(s.Mounts, m)
	}
	d, err := ParseDisk("file:data=/x,format=raw")
	if err != nil {
		t.Fatalf("ParseDisk = %v, want nil", err)
	}
	s.Disks = append(s.Disks, d)
	for _, spec := range []string{"dhcp,source=default,mac=00-11-22-33-44-55", "address=10.0.0.2/24%10.0.0.255,route=0.0.0.0/0%10.0.0.1,filter=f,filter.IP=10.0.0.2"} {
		n, err := ParseNetwork(spec)
		if err != nil {
			t.Fatalf("ParseNetwork(%q) = %v, want nil", spec, err)
		}
		s.Networks = append(s.Networks, n)
	}
	env, err := ParseEnv("A=b=c")
	if err != nil {
		t.Fatalf("ParseEnv = %v, want nil", err)
	}
	s.Command.Env = append(s.Command.Env, env)
	if s.Security, err = ParseSecurity("static,label=u:r:t:s0:c1,c2"); err != nil {
		t.Fatalf("ParseSecurity = %v, want nil", err)
	}
	if err := s.Validate(); err != nil {
		t.Errorf("Validate() of parsed options = %v, want nil", err)
	}
}
