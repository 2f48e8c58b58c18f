package config

import "testing"

func TestRemote(t *testing.T) {
	for _, tt := range []struct {
		uri  string
		want bool
	}{
		{"lxc:///", false},
		{"qemu:///system", false},
		{"qemu:///session", false},
		{"qemu:///embed?root=/tmp/x", false},
		{"qemu+unix:///system", false},
		{"qemu+tcp://127.0.0.1:16509/system", true},
		{"qemu+ssh://user@host/system", true},
		{"qemu+tls://host/system", true},
		{"lxc+ssh://host/", true},
		{"qemu+ssh:///system", true},
		{"qemu://host/system", true},
		{"qemu+unix://host/system", true},
	} {
		if got := Remote(tt.uri); got != tt.want {
			t.Errorf("Remote(%q) = %v, want %v", tt.uri, got, tt.want)
		}
	}
}
