package main

import (
	"slices"
	"testing"

	"github.com/virt-sandbox/virt-sandbox/images"
)

// TestImageCommand: docker run's rules for what runs.
func TestImageCommand(t *testing.T) {
	str := func(s string) *string { return &s }
	shell := images.Config{Entrypoint: []string{"/bin/sh", "-c"}, Cmd: []string{"echo hi"}}
	cmdOnly := images.Config{Cmd: []string{"/bin/bash"}}
	for _, tt := range []struct {
		name       string
		ic         images.Config
		entrypoint *string
		argv, want []string
	}{
		{"the image's entrypoint and command", shell, nil, nil, []string{"/bin/sh", "-c", "echo hi"}},
		{"arguments replace the command", shell, nil, []string{"date"}, []string{"/bin/sh", "-c", "date"}},
		{"--entrypoint drops the image's command", shell, str("/bin/ls"), nil, []string{"/bin/ls"}},
		{"--entrypoint with arguments", shell, str("/bin/ls"), []string{"-l", "/"}, []string{"/bin/ls", "-l", "/"}},
		{"--entrypoint '' clears it", shell, str(""), []string{"/bin/true"}, []string{"/bin/true"}},
		{"--entrypoint '' and nothing else", shell, str(""), nil, nil},
		{"no entrypoint", cmdOnly, nil, nil, []string{"/bin/bash"}},
		{"no entrypoint, arguments", cmdOnly, nil, []string{"id"}, []string{"id"}},
	} {
		if got := imageCommand(tt.ic, tt.entrypoint, tt.argv); !slices.Equal(got, tt.want) {
			t.Errorf("%s: imageCommand = %q, want %q", tt.name, got, tt.want)
		}
	}
}
