package hostdirs

import "testing"

func TestBase(t *testing.T) {
	for _, tt := range []struct {
		name       string
		uid        int
		env        map[string]string
		passwdHome string
		runtime    string
		cache      string
		logs       string
	}{
		{name: "root ignores XDG", uid: 0, env: map[string]string{"XDG_CACHE_HOME": "/x", "XDG_RUNTIME_DIR": "/run/user/0"},
			runtime: "/run/virt-sandbox", cache: "/var/cache/virt-sandbox", logs: "/var/log/virt-sandbox"},
		{name: "XDG variables", uid: 1000, env: map[string]string{"HOME": "/home/a", "XDG_RUNTIME_DIR": "/run/user/1000", "XDG_CACHE_HOME": "/c", "XDG_STATE_HOME": "/s"},
			runtime: "/run/user/1000/virt-sandbox", cache: "/c/virt-sandbox", logs: "/s/virt-sandbox"},
		{name: "su without a login session", uid: 1000, env: map[string]string{"HOME": "/home/a"},
			runtime: "/tmp/virt-sandbox-1000", cache: "/home/a/.cache/virt-sandbox", logs: "/home/a/.local/state/virt-sandbox"},
		{name: "relative values ignored", uid: 1000, env: map[string]string{"HOME": "/home/a", "XDG_RUNTIME_DIR": "run", "XDG_CACHE_HOME": "cache"},
			runtime: "/tmp/virt-sandbox-1000", cache: "/home/a/.cache/virt-sandbox", logs: "/home/a/.local/state/virt-sandbox"},
		{name: "no HOME: the password database's", uid: 1000, passwdHome: "/home/pw",
			runtime: "/tmp/virt-sandbox-1000", cache: "/home/pw/.cache/virt-sandbox", logs: "/home/pw/.local/state/virt-sandbox"},
		{name: "no home at all", uid: 1000,
			runtime: "/tmp/virt-sandbox-1000", cache: "/.cache/virt-sandbox", logs: "/.local/state/virt-sandbox"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("TMPDIR", "/tmp")
			c := caller{uid: tt.uid, getenv: func(k string) string { return tt.env[k] }, passwdHome: func() string { return tt.passwdHome }}
			if got := c.runtime(); got != tt.runtime {
				t.Errorf("runtime = %s, want %s", got, tt.runtime)
			}
			if got := c.under(cacheKind, "virt-sandbox"); got != tt.cache {
				t.Errorf("cache = %s, want %s", got, tt.cache)
			}
			if got := c.under(stateKind, "virt-sandbox"); got != tt.logs {
				t.Errorf("logs = %s, want %s", got, tt.logs)
			}
		})
	}
}
