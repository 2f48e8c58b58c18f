package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/virt-sandbox/virt-sandbox/sandbox"
)

// unitDir is where --install puts units.
const unitDir = "/etc/systemd/system"

// systemdUnit prints, or installs, a unit that starts the service with the
// system and stops it gracefully.
func systemdUnit(name string, install bool, stdout io.Writer) error {
	if _, err := sandbox.ServiceConfig(name); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	unit := fmt.Sprintf(`[Unit]
Description=virt-sandbox service %[1]s
Requires=libvirtd.service
After=libvirtd.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=%[2]s start %[1]s
ExecStop=%[2]s stop %[1]s
TimeoutStopSec=30

[Install]
WantedBy=multi-user.target
`, name, exe)
	if !install {
		_, err := io.WriteString(stdout, unit)
		return err
	}
	path := filepath.Join(unitDir, "virt-sandbox-"+name+".service")
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "installed %s (systemctl daemon-reload; systemctl enable --now %s)\n", path, filepath.Base(path))
	return nil
}
