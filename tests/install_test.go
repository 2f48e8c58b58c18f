package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestInstall: make install puts the commands, the init, the manual pages
// and the completions under DESTDIR; each page renders, the completions
// complete subcommands and options, and an installed command finds its
// init.
func TestInstall(t *testing.T) {
	t.Parallel()
	dest := t.TempDir()
	install := exec.Command("make", "install", "DESTDIR="+dest, "PREFIX=/usr/local")
	install.Dir = ".."
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	prefix := filepath.Join(dest, "usr/local")
	for _, c := range []string{"virt-sandbox", "virt-sandbox-service", "virt-sandbox-image"} {
		for _, f := range []string{"bin/" + c, "share/bash-completion/completions/" + c, "share/zsh/site-functions/_" + c} {
			if _, err := os.Stat(filepath.Join(prefix, f)); err != nil {
				t.Errorf("make install: %v", err)
			}
		}
		page, err := exec.Command("man", "-l", filepath.Join(prefix, "share/man/man1", c+".1")).Output()
		if err != nil || !strings.Contains(string(page), "NAME") || !strings.Contains(string(page), c) {
			t.Errorf("man -l %s.1: %v\n%s", c, err, page)
		}
	}
	complete := func(cmd string, words ...string) string {
		script := "source " + filepath.Join(prefix, "share/bash-completion/completions", cmd) +
			"; COMP_WORDS=(" + strings.Join(words, " ") + "); COMP_CWORD=" + strconv.Itoa(len(words)-1) +
			"; _" + cmd + "_complete; echo ${COMPREPLY[@]}"
		sh := exec.Command("bash", "-c", script)
		sh.Env = append(os.Environ(), "PATH="+filepath.Join(prefix, "bin")+":"+os.Getenv("PATH"))
		out, err := sh.Output()
		if err != nil {
			t.Errorf("completing %q: %v", words, err)
		}
		return strings.TrimSpace(string(out))
	}
	if got := complete("virt-sandbox-service", "virt-sandbox-service", "st"); got != "start stop status" {
		t.Errorf("virt-sandbox-service st<TAB> = %q, want start stop status", got)
	}
	if got := complete("virt-sandbox-service", "virt-sandbox-service", "create", "web", "--res"); got != "--restart" {
		t.Errorf("virt-sandbox-service create web --res<TAB> = %q, want --restart", got)
	}
	// Completing after a service's name runs nothing: no service made.
	if got := complete("virt-sandbox-service", "virt-sandbox-service", "create", "svc-test-completion", ""); got != "" {
		t.Errorf("virt-sandbox-service create NAME <TAB> = %q, want nothing (files)", got)
	}
	if _, err := os.Stat("/etc/virt-sandbox/services/svc-test-completion"); err == nil {
		t.Errorf("completing after create NAME created the service")
		exec.Command(filepath.Join(prefix, "bin/virt-sandbox-service"), "delete", "svc-test-completion").Run()
	}
	if got := complete("virt-sandbox", "virt-sandbox", "--start-t"); got != "--start-timeout" {
		t.Errorf("virt-sandbox --start-t<TAB> = %q, want --start-timeout", got)
	}
	run := exec.Command(filepath.Join(prefix, "bin/virt-sandbox"), "/bin/echo", "installed")
	if out, err := run.CombinedOutput(); err != nil || string(out) != "installed\n" {
		t.Errorf("the installed virt-sandbox: %v, %q; want it to find its init in libexec", err, out)
	}
}
