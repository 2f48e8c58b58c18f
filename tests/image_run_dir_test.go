package tests

import (
	"fmt"
	"runtime"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// TestImageRunDir: what an image has under /run (a daemon's directory,
// with its owner and set-group-id bit, reached through /var/run as
// Debian's and Alpine's images do) is there in its sandbox, under the
// sandbox's own /run, as docker shows it; the daemon's user can use it.
func TestImageRunDir(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	nonce := randomHex(t)
	forgetImages(t, nonce)
	daemon := layer(t, types.DockerLayer,
		dirEntry("run", 0o755, 0),
		dirEntry("run/app", 0o2775, 1234),
		fileEntry("run/app/hint", "from the image\n", 0o644),
		dirEntry("var", 0o755, 0),
		symlinkEntry("var/run", "/run"),
	)
	img := newImage(t, runtime.GOARCH, v1.Config{Entrypoint: []string{"/bin/sh", "-c"}, Env: []string{"PATH=/bin"}},
		baseLayer(t, types.DockerLayer), daemon)
	ref := fmt.Sprintf("%s/vsbtest/rundir-%s:latest", reg.addr, nonce)
	push(t, ref, img)
	imageOK(t, "pull", "--insecure", ref)
	onEachDriver(t, func(t *testing.T, uri string) {
		r := imageRun(t, opts{}, "run", "-c", uri, "-u", "app", ref, "--",
			`stat -c '%a %u:%g' /run/app; cat /var/run/app/hint; echo 42 >/var/run/app/pid && stat -c '%g' /run/app/pid`)
		r.want(t, 0, "2775 1234:1234\nfrom the image\n1234\n")
	})
}
