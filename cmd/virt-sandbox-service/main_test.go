package main

import (
	"github.com/urfave/cli/v2"

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
		// Options before the name, their values skipped.
		{"s create --userns on web -- /bin/true", "s create --userns on -- web /bin/true"},
		{"s create -p -N network=default web -- /bin/true", "s create -p -N network=default -- web /bin/true"},
		{"s create --userns=on web -- /bin/true", "s create --userns=on -- web /bin/true"},
		{"s create -p web --restart on-failure -- /bin/true", "s create -p --restart on-failure -- web /bin/true"},
		{"s create -p web /bin/sh -c x", "s create -p -- web /bin/sh -c x"},
		{"s create -p -- /bin/true", "s create -p -- /bin/true"},
		{"s create --restart", "s create --restart"},
	} {
		var create *cli.Command
		for _, c := range commands() {
			if c.Name == "create" {
				create = c
			}
		}
		got := nameAfterOptions(strings.Fields(tt.in), flagTakesValue(create))
		if want := strings.Fields(tt.want); !slices.Equal(got, want) {
			t.Errorf("nameAfterOptions(%q) = %q, want %q", tt.in, got, want)
		}
	}
}
