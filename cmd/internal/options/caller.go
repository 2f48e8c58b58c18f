package options

import (
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/virt-sandbox/virt-sandbox/config"
	"github.com/virt-sandbox/virt-sandbox/config/guest"
)

// callerMounts are host-binds, each at its own path, of what the program
// must find where the caller has it, on the host's root:
//
//   - the working directory, and the directory of a program named by its
//     path, read-only like the rest of the host, when they are inside the
//     sandbox's own /tmp, /dev/shm or /run, which hide the host's;
//   - writable, wherever they are, the directories a go test binary is
//     told to write to (coverage, profiles): go test -exec reads them back.
//
// A user's mount over a path decides what is there instead; a directory
// that does not exist is left for the program to report.
func callerMounts(s *config.Sandbox) []config.Mount {
	if s.Root != "" || config.Remote(s.URI) {
		// Not the caller's host root: no place of the caller's is there.
		return nil
	}
	want := map[string]bool{} // directory: writable
	if d := realPath(s.Command.Dir); hidden(d) {
		want[d] = false
	}
	if prog := s.Command.Argv[0]; filepath.IsAbs(prog) {
		if d := realPath(filepath.Dir(prog)); hidden(d) {
			want[d] = false
		}
	}
	for _, d := range testOutputs(s.Command.Argv, s.Command.Dir) {
		want[realPath(d)] = true
	}
	var mounts []config.Mount
	for _, d := range minimalDirs(want) {
		if d == "/" || config.UnderMount(s.Mounts, d) {
			continue
		}
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
			continue
		}
		mounts = append(mounts, config.Mount{Type: config.HostBind, Target: d, Source: d, ReadOnly: !want[d]})
	}
	return mounts
}

// realPath is p with its symbolic links resolved, where it is bound: a
// link on the host's root (/var/run to /run) leads to the same place
// inside, so the path the program uses finds the bind.
func realPath(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return filepath.Clean(p)
}

// hidden tells whether p is inside one of the sandbox's own directories.
func hidden(p string) bool {
	for _, d := range guest.PrivateDirs {
		if strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}

// minimalDirs returns the directories of want, parents first, without
// those a kept one already gives as writable as they need.
func minimalDirs(want map[string]bool) []string {
	dirs := make([]string, 0, len(want))
	for d := range want {
		dirs = append(dirs, d)
	}
	sort.Slice(dirs, func(i, j int) bool {
		return len(dirs[i]) < len(dirs[j]) || len(dirs[i]) == len(dirs[j]) && dirs[i] < dirs[j]
	})
	var kept []string
	for _, d := range dirs {
		needed := true
		for _, k := range kept {
			if strings.HasPrefix(d, k+"/") && (want[k] || !want[d]) {
				needed = false
			}
		}
		if needed {
			kept = append(kept, d)
		}
	}
	return kept
}

// testProfiles are the go test binary's flags naming a file it writes,
// relative to -test.outputdir when not absolute.
var testProfiles = []string{"test.coverprofile", "test.cpuprofile", "test.memprofile", "test.blockprofile", "test.mutexprofile", "test.trace"}

// testOutputs are the directories a go test binary (argv[0] ending in
// .test) is told to write to by its flags: those of the testProfiles
// files, -test.gocoverdir and -test.testlogfile's. go test passes its
// flags as -test.NAME=VALUE before any of the user's -args; as the flag
// package does, the reading stops at the first argument that is not a
// flag. Relative paths are the working directory's, wd.
func testOutputs(argv []string, wd string) []string {
	if !strings.HasSuffix(argv[0], ".test") {
		return nil
	}
	flags := testFlags(argv[1:])
	abs := func(base, p string) string {
		if filepath.IsAbs(p) {
			return filepath.Clean(p)
		}
		return filepath.Join(base, p)
	}
	outDir := abs(wd, flags["test.outputdir"])
	var dirs []string
	for _, name := range testProfiles {
		if v := flags[name]; v != "" {
			dirs = append(dirs, filepath.Dir(abs(outDir, v)))
		}
	}
	if v := flags["test.gocoverdir"]; v != "" {
		dirs = append(dirs, abs(wd, v))
	}
	if v := flags["test.testlogfile"]; v != "" {
		dirs = append(dirs, filepath.Dir(abs(wd, v)))
	}
	return dirs
}

// testFlags reads the -test.NAME flags of args that name paths.
func testFlags(args []string) map[string]string {
	paths := map[string]bool{"test.outputdir": true, "test.gocoverdir": true, "test.testlogfile": true}
	for _, p := range testProfiles {
		paths[p] = true
	}
	flags := map[string]string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" || len(a) < 2 || a[0] != '-' {
			break
		}
		name, val, hasVal := strings.Cut(strings.TrimPrefix(a[1:], "-"), "=")
		if !paths[name] {
			continue
		}
		if !hasVal && i+1 < len(args) {
			i++
			val = args[i]
		}
		flags[name] = val
	}
	return flags
}
