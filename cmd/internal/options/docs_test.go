package options

import (
	"bytes"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

func TestCompletion(t *testing.T) {
	app := &cli.App{
		Name:  "svc",
		Flags: []cli.Flag{&cli.StringFlag{Name: "connect", Aliases: []string{"c"}}},
		Commands: []*cli.Command{
			{Name: "create", Flags: []cli.Flag{&cli.StringFlag{Name: "restart"}, &cli.BoolFlag{Name: "rw"}}},
			{Name: "start"},
			{Name: "secret", Hidden: true},
		},
	}
	for _, tt := range []struct{ args, want string }{
		{"svc --generate-bash-completion", "create start"},
		{"svc -c lxc:/// --generate-bash-completion", "create start"},
		{"svc --c --generate-bash-completion", "--connect"},
		{"svc create web --r --generate-bash-completion", "--restart --rw"},
		{"svc create web --generate-bash-completion", ""},
		{"svc create web --nosuch --generate-bash-completion", ""},
	} {
		var out bytes.Buffer
		asked, err := Docs(app, strings.Fields(tt.args), &out)
		if got := strings.Join(strings.Fields(out.String()), " "); !asked || err != nil || got != tt.want {
			t.Errorf("Docs(%q) = %v, %v, printed %q; want it answered with %q", tt.args, asked, err, got, tt.want)
		}
	}
	if asked, _ := Docs(app, []string{"svc", "create", "web", "--", "/bin/true"}, new(bytes.Buffer)); asked {
		t.Errorf("Docs answered a command line that asked for nothing")
	}
}
