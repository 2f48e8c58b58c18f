package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/virt-sandbox/virt-sandbox/sandbox"
	"github.com/virt-sandbox/virt-sandbox/sandbox/hostdirs"
)

// systemdUnit prints, or installs, a unit that starts the service with the
// system and stops it gracefully: a system unit for root, a user unit for
// anyone else, whose session libvirtd the client starts itself.
func systemdUnit(name string, install bool, stdout io.Writer) error {
	if _, err := sandbox.ServiceConfig(name); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	// The system libvirtd is a unit; a session libvirtd is started by the
	// client that needs it.
	requires, wantedBy, systemctl := "Requires=libvirtd.service\nAfter=libvirtd.service\n", "multi-user.target", "systemctl"
	if os.Geteuid() != 0 {
		requires, wantedBy, systemctl = "", "default.target", "systemctl --user"
	}
	unit := fmt.Sprintf(`[Unit]
Description=virt-sandbox service %[1]s
%[3]s
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=%[2]s start %[1]s
ExecStop=%[2]s stop %[1]s
TimeoutStopSec=30

[Install]
WantedBy=%[4]s
`, name, exe, requires, wantedBy)
	if !install {
		_, err := io.WriteString(stdout, unit)
		return err
	}
	dir := hostdirs.SystemdUnits()
	path := filepath.Join(dir, "virt-sandbox-"+name+".service")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "installed %s (%s daemon-reload; %s enable --now %s)\n", path, systemctl, systemctl, filepath.Base(path))
	return nil
}
