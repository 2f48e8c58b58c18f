package main

import (
	"slices"
	"strings"
	"testing"
)

func TestNameAfterOptions(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"s create web -c lxc:/// -- /bin/httpd -X", "s create -c lxc:/// -- web /bin/httpd -X"},
		{"s create web -- /bin/true", "s create -- web /bin/true"},
		{"s create web /bin/true -x", "s create -- web /bin/true -x"},
		{"s -c qemu:///system create web -- /bin/true", "s -c qemu:///system create -- web /bin/true"},
		{"s --connect qemu:///system create web -e A=1 -- /bin/true", "s --connect qemu:///system create -e A=1 -- web /bin/true"},
		{"s --connect=qemu:///system create web -- /bin/true", "s --connect=qemu:///system create -- web /bin/true"},
		{"s create --help", "s create --help"},
		{"s start web", "s start web"},
		{"s -c lxc:/// status web", "s -c lxc:/// status web"},
	} {
		got := nameAfterOptions(strings.Fields(tt.in))
		if want := strings.Fields(tt.want); !slices.Equal(got, want) {
			t.Errorf("nameAfterOptions(%q) = %q, want %q", tt.in, got, want)
		}
	}
}
