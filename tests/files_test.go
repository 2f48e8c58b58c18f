package tests

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// The file tests: custom and writable roots, mounts, includes and tagged
// disks, each shown on a real sandbox.

// busyboxApplets are the commands the custom roots of these tests have.
var busyboxApplets = []string{
	"sh", "cat", "ls", "touch", "id", "echo", "df", "mount", "test", "grep",
	"awk", "wc", "mkdir", "rm", "stat", "readlink", "head", "dd", "sync",
}

// busyboxRoot makes a minimal root in a directory the sandboxes see: the
// static busybox, its applets and /etc/marker holding marker. It has no
// mount points (dev, proc, run...): a root needs nothing but the program.
func busyboxRoot(t *testing.T, marker string) string {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("busybox (busybox-static, installed by tests/setup-host.sh): %v", err)
	}
	dir := hostDir(t)
	for _, d := range []string{"bin", "etc"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(dir, "bin/busybox"), string(bb), 0o755)
	for _, a := range busyboxApplets {
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(dir, "etc/marker"), marker+"\n", 0o644)
	return dir
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	// WriteFile's mode goes through the umask.
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func randomHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// host runs a host command and returns its stdout; any failure is fatal.
func host(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %q: %v\n%s%s", name, args, err, out, stderr.Bytes())
	}
	return string(out)
}

// needTools fails the test at once, naming the package, when a host tool
// it needs is missing.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	pkg := map[string]string{
		"mkfs.ext4": "e2fsprogs", "debugfs": "e2fsprogs", "e2fsck": "e2fsprogs",
		"qemu-img": "qemu-utils", "mksquashfs": "squashfs-tools", "losetup": "mount",
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing on this host: install the Debian package %s (tests/setup-host.sh does not)", tool, pkg[tool])
		}
	}
}

// absentOnHost fails the test when a path the test relies on being missing
// from the host's root exists.
func absentOnHost(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s exists on the host", p)
		}
	}
}

// sandboxName is a unique domain name, so a test knows its run's state
// directory.
func sandboxName(t *testing.T, uri string) string {
	return "sandbox-files-" + driverName(uri) + "-" + randomHex(t)
}

// TestRootCustomAndWritable: -r DIR is the sandbox's / and read-only, with
// the kernel filesystems, /run and /tmp though DIR has only bin and etc; -W
// makes the root writable without any write reaching the host or DIR.
func TestRootCustomAndWritable(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/usr/bin/apt"); err != nil {
		t.Fatalf("this test checks that the host's /usr/bin/apt is absent from a custom root: %v", err)
	}
	onEachDriver(t, func(t *testing.T, uri string) {
		marker := "marker-" + randomHex(t)
		dir := busyboxRoot(t, marker)
		etc := filepath.Join(dir, "etc")
		var wg sync.WaitGroup
		wg.Add(3)
		go func() {
			defer wg.Done()
			r := sandbox(t, opts{}, "-c", uri, "-r", dir, "/bin/sh", "-c", `
				cat /etc/marker
				test -e /usr/bin/apt && echo apt-present || echo no-apt
				ls /usr >/dev/null 2>&1 && echo usr-present || echo no-usr
				touch /etc/x 2>/dev/null && echo root-writable || echo root-read-only
				touch /tmp/x /dev/shm/x && echo tmp-writable
				test -e /proc/self/exe -a -d /sys/class -a -d /run && echo kernel-filesystems`)
			r.want(t, 0, marker+"\nno-apt\nno-usr\nroot-read-only\ntmp-writable\nkernel-filesystems\n")
		}()
		go func() {
			defer wg.Done()
			r := sandbox(t, opts{}, "-c", uri, "-W", "-r", dir, "/bin/sh", "-c", `
				touch /etc/x && echo new >/etc/x && cat /etc/x &&
				echo changed >/etc/marker && cat /etc/marker &&
				rm /bin/cat && mkdir /newdir && echo done`)
			r.want(t, 0, "new\nchanged\ndone\n")
		}()
		hostName := "virt-sandbox-test-" + randomHex(t)
		go func() {
			defer wg.Done()
			// The host's root, written as the caller (root, without
			// capabilities: /etc and /usr are root's).
			r := sandbox(t, opts{}, "-c", uri, "-W", "/bin/sh", "-c", `
				touch /etc/`+hostName+` && ls /etc/`+hostName+` &&
				echo x >/usr/`+hostName+` && cat /usr/`+hostName)
			r.want(t, 0, "/etc/"+hostName+"\nx\n")
		}()
		wg.Wait()
		absentOnHost(t, "/etc/"+hostName, "/usr/"+hostName, filepath.Join(etc, "x"), filepath.Join(dir, "newdir"))
		if top, err := os.ReadDir(dir); err != nil || len(top) != 2 {
			t.Errorf("%s after the runs holds %v (%v); want only bin and etc: the mount points are the sandbox's", dir, top, err)
		}
		entries, err := os.ReadDir(etc)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 1 || entries[0].Name() != "marker" {
			t.Errorf("%s after the runs holds %v; want only marker", etc, entries)
		}
		if got := readFile(t, filepath.Join(etc, "marker")); got != marker+"\n" {
			t.Errorf("%s/marker after the runs = %q, want %q", etc, got, marker+"\n")
		}
		if fi, err := os.Lstat(filepath.Join(dir, "bin/cat")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("%s/bin/cat after the runs: %v, %v; want the symbolic link", dir, fi, err)
		}
	})
}

// TestMountHostBindRAMGuestBind: host-bind (to a target missing from the
// root, read-only, and a fresh temporary directory), ram of a given size
// and guest-bind, in one run per driver.
func TestMountHostBindRAMGuestBind(t *testing.T) {
	t.Parallel()
	// Targets that are not on the host's root, so the sandbox must make
	// them without the root becoming writable.
	const data, scratch, roDir, mem, big, etc2, memro = "/virt-sandbox-test-data", "/scratch", "/ro", "/mem", "/big", "/etc2", "/memro"
	absentOnHost(t, data, scratch, roDir, mem, big, etc2, memro)
	onEachDriver(t, func(t *testing.T, uri string) {
		src := hostDir(t)
		writeFile(t, filepath.Join(src, "seed"), "host seed\n", 0o644)
		roSrc := hostDir(t)
		writeFile(t, filepath.Join(roSrc, "seed"), "ro seed\n", 0o644)
		name := sandboxName(t, uri)
		r := sandbox(t, opts{}, "-c", uri, "-n", name,
			"-m", "host-bind:"+data+"="+src,
			"-m", "host-bind:"+scratch+"=",
			"-m", "host-bind:"+roDir+"="+roSrc+",ro",
			"-m", "ram:"+mem+"=8M",
			"-m", "ram:"+big+"=3G",
			"-m", "guest-bind:"+etc2+"=/etc,ro",
			"-m", "guest-bind:"+memro+"="+mem+",ro",
			"/bin/sh", "-c", `
				cat `+data+`/seed
				echo written inside >`+data+`/new && echo data-written
				echo "scratch entries: $(ls -A `+scratch+` | wc -l)"
				echo tmp >`+scratch+`/f && cat `+scratch+`/f
				cat `+roDir+`/seed
				touch `+roDir+`/x 2>/dev/null && echo ro-writable || echo ro-refused
				touch /etc/virt-sandbox-x 2>/dev/null && echo root-writable || echo root-read-only
				awk '$2 == "`+mem+`" || $2 == "`+big+`" { print $2, $3, $4 }' /proc/mounts
				df -k `+mem+` | awk 'NR == 2 { print "df", $2 }'
				dd if=/dev/zero of=`+mem+`/fill bs=1024 count=9000 2>/dev/null && echo mem-overfilled || echo mem-full
				rm `+mem+`/fill
				echo in mem >`+mem+`/f && cat `+memro+`/f
				touch `+memro+`/x 2>/dev/null && echo memro-writable || echo memro-refused
				cmp /etc/passwd `+etc2+`/passwd && test "$(ls -A /etc)" = "$(ls -A `+etc2+`)" && echo etc2-same
				touch `+etc2+`/x 2>/dev/null && echo etc2-writable || echo etc2-refused`)
		lines := strings.Split(r.stdout, "\n")
		want := []string{
			"host seed", "data-written", "scratch entries: 0", "tmp", "ro seed", "ro-refused", "root-read-only",
			mem + " tmpfs size=8192k", big + " tmpfs size=3145728k", "df 8192", "mem-full",
			"in mem", "memro-refused", "etc2-same", "etc2-refused", "",
		}
		ok := r.code == 0 && len(lines) == len(want)
		for i := 0; ok && i < len(want); i++ {
			if strings.Contains(want[i], " tmpfs ") {
				// The type and the size option among the others.
				f := strings.Fields(lines[i])
				w := strings.Fields(want[i])
				ok = len(f) == 3 && f[0] == w[0] && f[1] == w[1] && slices.Contains(strings.Split(f[2], ","), w[2])
			} else {
				ok = lines[i] == want[i]
			}
		}
		if !ok {
			t.Errorf("exit %d, stdout:\n%s\nwant exit 0 and (mount options in any order):\n%s\nstderr:\n%s", r.code, r.stdout, strings.Join(want, "\n"), r.stderr)
		}
		if got := readFile(t, filepath.Join(src, "new")); got != "written inside\n" {
			t.Errorf("%s/new on the host = %q, want %q", src, got, "written inside\n")
		}
		if entries, _ := os.ReadDir(roSrc); len(entries) != 1 {
			t.Errorf("read-only host-bind source %s holds %v after the run; want only seed", roSrc, entries)
		}
		absentOnHost(t, data, scratch, roDir, mem, big, etc2, memro, "/etc/virt-sandbox-x")
		checkGone(t, uri, name)
	})
}

// ext4Image makes a raw 64 MiB ext4 image holding /seed.
func ext4Image(t *testing.T, dir, name, seed string) string {
	t.Helper()
	img := filepath.Join(dir, name)
	sparseFile(t, img, 64<<20)
	host(t, "mkfs.ext4", "-q", "-F", img)
	src := filepath.Join(dir, name+".seed")
	writeFile(t, src, seed, 0o644)
	host(t, "debugfs", "-w", "-R", "write "+src+" seed", img)
	if got := host(t, "debugfs", "-R", "cat /seed", img); got != seed {
		t.Fatalf("debugfs wrote /seed = %q into %s, want %q", got, img, seed)
	}
	return img
}

func sparseFile(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
}

// vfatImage makes an empty 16 MiB FAT image with mkfs.vfat (dosfstools) or,
// without it, the mkdosfs of busybox-static.
func vfatImage(t *testing.T, dir string) string {
	t.Helper()
	img := filepath.Join(dir, "fat.img")
	sparseFile(t, img, 16<<20)
	if _, err := exec.LookPath("mkfs.vfat"); err == nil {
		host(t, "mkfs.vfat", img)
	} else {
		host(t, "/bin/busybox", "mkdosfs", img)
	}
	return img
}

// TestMountHostImage: ext4 raw images mount read-write and keep what is
// written; qcow2 images mount on QEMU and are refused on LXC without nbd;
// the filesystem type is read from the image, not assumed (squashfs on both
// drivers; vfat on QEMU only, as this host's kernel has no vfat).
func TestMountHostImage(t *testing.T) {
	t.Parallel()
	needTools(t, "mkfs.ext4", "debugfs", "e2fsck", "qemu-img", "mksquashfs")
	onEachDriver(t, func(t *testing.T, uri string) {
		dir := hostDir(t)
		raw := ext4Image(t, dir, "raw.img", "ext4 seed\n")
		qcow := filepath.Join(dir, "image.qcow2")
		host(t, "qemu-img", "convert", "-O", "qcow2", raw, qcow)
		sqDir := filepath.Join(dir, "sq")
		if err := os.Mkdir(sqDir, 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(sqDir, "seed"), "squashfs seed\n", 0o644)
		sq := filepath.Join(dir, "sq.img")
		host(t, "mksquashfs", sqDir, sq, "-noappend", "-quiet")

		written := "written on " + driverName(uri) + "\n"
		args := []string{"-c", uri, "-m", "host-image:/img=" + raw + ",format=raw", "-m", "host-image:/sq=" + sq}
		script := `
			cat /img/seed /sq/seed
			echo "` + strings.TrimSpace(written) + `" >/img/file && echo img-written
			touch /sq/x 2>/dev/null && echo sq-writable || echo sq-refused
			awk '$2 ~ /^\/(img|sq|q|fat)$/ { print $2, $3 }' /proc/mounts | sort`
		want := "ext4 seed\nsquashfs seed\nimg-written\nsq-refused\n/img ext4\n/sq squashfs\n"
		var fat, fatMarker string
		if driverName(uri) == "qemu" {
			fat = vfatImage(t, dir)
			fatMarker = "fat-marker-" + randomHex(t)
			args = append(args, "-m", "host-image:/q="+qcow+",format=qcow2", "-m", "host-image:/fat="+fat)
			script += `
			cat /q/seed
			echo ` + fatMarker + ` >/fat/m && sync && cat /fat/m`
			want = "ext4 seed\nsquashfs seed\nimg-written\nsq-refused\n/fat vfat\n/img ext4\n/q ext4\n/sq squashfs\n" +
				"ext4 seed\n" + fatMarker + "\n"
		}
		r := sandbox(t, opts{}, append(args, "/bin/sh", "-c", script)...)
		r.want(t, 0, want)
		if got := host(t, "debugfs", "-R", "cat /file", raw); got != written {
			t.Errorf("debugfs cat /file of %s after the run = %q, want %q", raw, got, written)
		}
		if out, err := exec.Command("e2fsck", "-fn", raw).CombinedOutput(); err != nil {
			t.Errorf("e2fsck -fn %s after the run: %v\n%s", raw, err, out)
		}
		if fat != "" {
			if b, err := os.ReadFile(fat); err != nil || !bytes.Contains(b, []byte(fatMarker)) {
				t.Errorf("%s after the run does not hold %q (%v)", fat, fatMarker, err)
			}
		}
		if driverName(uri) == "lxc" {
			r := sandbox(t, opts{}, "-c", uri, "-m", "host-image:/q="+qcow, "cat", "/q/seed")
			if _, err := os.Stat("/dev/nbd0"); err == nil {
				r.want(t, 0, "ext4 seed\n")
			} else {
				checkRefused(t, r, "nbd")
			}
		}
	})
}

// TestIncludeFiles: -i GUEST=HOST, -i PATH and -I FILE copy host files and a
// directory tree into writable mounts, owned by the program's identity.
func TestIncludeFiles(t *testing.T) {
	t.Parallel()
	u := lookupUser(t)
	onEachDriver(t, func(t *testing.T, uri string) {
		dir := hostDir(t)
		src := filepath.Join(dir, "src")
		for _, d := range []string{src, src + "/tree", src + "/tree/sub"} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		writeFile(t, src+"/a", "file a\n", 0o644)
		writeFile(t, src+"/b", "file b\n", 0o644)
		writeFile(t, src+"/same", "same path\n", 0o644)
		writeFile(t, src+"/hidden", "not included\n", 0o644)
		writeFile(t, src+"/tree/top", "top\n", 0o644)
		writeFile(t, src+"/tree/sub/deep", "deep\n", 0o600)
		writeFile(t, src+"/tree/run.sh", "#!/bin/sh\necho ran\n", 0o755)
		if err := os.Symlink("top", src+"/tree/link"); err != nil {
			t.Fatal(err)
		}
		list := filepath.Join(dir, "list")
		writeFile(t, list, "# includes\n/mem/b="+src+"/b\n\n  /mem/tree="+src+"/tree  \n", 0o644)
		// The caller's own files, which it can read whatever their mode.
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		err := filepath.WalkDir(src, func(p string, _ os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, uid, gid)
		})
		if err != nil {
			t.Fatal(err)
		}
		// A ram mount over src hides the host's files there: only what is
		// included shows.
		r := sandbox(t, opts{asUser: true}, "-c", uri,
			"-m", "ram:/mem=1M", "-m", "ram:"+src+"=1M",
			"-i", "/mem/a="+src+"/a", "-i", src+"/same", "-I", list,
			"/bin/sh", "-c", `
				cat /mem/a /mem/b `+src+`/same
				ls -A `+src+`
				cat /mem/tree/top /mem/tree/sub/deep
				readlink /mem/tree/link
				/mem/tree/run.sh
				stat -c '%u %a' /mem/a /mem/tree/sub/deep /mem/tree/run.sh /mem/tree`)
		r.want(t, 0, "file a\nfile b\nsame path\nsame\ntop\ndeep\ntop\nran\n"+
			u.Uid+" 644\n"+u.Uid+" 600\n"+u.Uid+" 755\n"+u.Uid+" 755\n")
	})
}

// TestDiskTags: --disk gives a block device at /dev/disk/by-tag/TAG that a
// privileged program can format and write, and each tag names its own file
// whatever order the disks are given in.
func TestDiskTags(t *testing.T) {
	t.Parallel()
	needTools(t, "debugfs", "e2fsck", "qemu-img")
	onEachDriver(t, func(t *testing.T, uri string) {
		dir := hostDir(t)
		file := func(name string) string {
			p := filepath.Join(dir, name)
			sparseFile(t, p, 32<<20)
			return p
		}
		data, a1, b1, a2, b2 := file("data.img"), file("a1.img"), file("b1.img"), file("a2.img"), file("b2.img")
		qemu := driverName(uri) == "qemu"
		var qcow string
		if qemu {
			qcow = filepath.Join(dir, "q.qcow2")
			host(t, "qemu-img", "create", "-q", "-f", "qcow2", qcow, "32M")
		}
		mark := func(tag, marker string) string {
			return "echo " + marker + " | dd of=/dev/disk/by-tag/" + tag + " conv=notrunc status=none && "
		}
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			args := []string{"-c", uri, "-p"}
			if !qemu {
				// Mounting a disk takes the host's root on LXC.
				args = append(args, "--userns", "off")
			}
			r := sandbox(t, opts{}, append(args,
				"--disk", "file:data="+data, "--disk", "file:one="+a1, "--disk", "file:two="+b1,
				"/bin/sh", "-c", mark("one", "one-first")+mark("two", "two-first")+`
					mkfs.ext4 -q /dev/disk/by-tag/data && mkdir /tmp/m && mount /dev/disk/by-tag/data /tmp/m &&
					echo content >/tmp/m/f && umount /tmp/m && sync && echo done`)...)
			r.want(t, 0, "done\n")
		}()
		go func() {
			defer wg.Done()
			args := []string{"-c", uri, "-p", "--disk", "file:two=" + b2 + ",format=raw", "--disk", "file:one=" + a2}
			script := mark("one", "one-reversed") + mark("two", "two-reversed")
			if qemu {
				args = append(args, "--disk", "file:q="+qcow+",format=qcow2")
				script += mark("q", "qcow2-marker")
			}
			r := sandbox(t, opts{}, append(args, "/bin/sh", "-c", script+"sync && echo done")...)
			r.want(t, 0, "done\n")
		}()
		wg.Wait()
		if got := host(t, "debugfs", "-R", "cat /f", data); got != "content\n" {
			t.Errorf("debugfs cat /f of %s = %q, want %q", data, got, "content\n")
		}
		if out, err := exec.Command("e2fsck", "-fn", data).CombinedOutput(); err != nil {
			t.Errorf("e2fsck -fn %s: %v\n%s", data, err, out)
		}
		head := func(p string, n int) string {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			return string(b[:n])
		}
		for p, want := range map[string]string{a1: "one-first\n", b1: "two-first\n", a2: "one-reversed\n", b2: "two-reversed\n"} {
			if got := head(p, len(want)); got != want {
				t.Errorf("%s starts with %q, want %q", filepath.Base(p), got, want)
			}
		}
		if qemu {
			raw := filepath.Join(dir, "q.raw")
			host(t, "qemu-img", "convert", "-O", "raw", qcow, raw)
			if got := head(raw, 13); got != "qcow2-marker\n" {
				t.Errorf("the qcow2 disk starts with %q, want %q", got, "qcow2-marker\n")
			}
		}
	})
}

// hostTraces is what a refused run must not leave on the host: loop
// devices, mounts and temporary directories.
type hostTraces struct {
	loops     []string
	mounts    int
	tempDirs  []string
	leftovers []string
}

func traces(t *testing.T) hostTraces {
	t.Helper()
	var h hostTraces
	for _, l := range strings.Split(host(t, "losetup", "-a"), "\n") {
		if l != "" {
			h.loops = append(h.loops, l)
		}
	}
	h.mounts = strings.Count(readFile(t, "/proc/self/mountinfo"), "\n")
	for _, d := range []string{os.TempDir(), "/var/tmp", "/run/virt-sandbox"} {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			n := e.Name()
			// The tests' own directories and the persistent QEMU cache are
			// not the run's.
			if strings.Contains(n, "sandbox") && !strings.HasPrefix(n, "virt-sandbox-test") && !strings.HasPrefix(n, "virt-sandbox-cache-") {
				h.tempDirs = append(h.tempDirs, filepath.Join(d, n))
			}
		}
	}
	h.leftovers = leftovers()
	return h
}

func added(before, after []string) []string {
	var n []string
	for _, a := range after {
		if !slices.Contains(before, a) {
			n = append(n, a)
		}
	}
	return n
}

// TestFileBadInput: each bad file option exits 125 with one line naming the
// problem and leaves no loop device, mount, state directory, temporary
// directory or domain. Not parallel: it compares host-wide state.
func TestFileBadInput(t *testing.T) {
	needTools(t, "mkfs.ext4", "qemu-img", "losetup")
	dir := hostDir(t)
	x, y := filepath.Join(dir, "x.img"), filepath.Join(dir, "y.img")
	sparseFile(t, x, 16<<20)
	sparseFile(t, y, 16<<20)
	raw := ext4Image(t, dir, "raw.img", "seed\n")
	qcow := filepath.Join(dir, "image.qcow2")
	host(t, "qemu-img", "convert", "-O", "qcow2", raw, qcow)
	type badCase struct {
		name string
		args []string
		want string
		qemu bool // also on qemu:///system
	}
	cases := []badCase{
		{"missing host-bind source", []string{"-m", "host-bind:/d=/nonexistent"}, "/nonexistent", true},
		{"relative target", []string{"-m", "host-bind:d=/tmp"}, `"d"`, false},
		{"unknown image format", []string{"-m", "host-image:/d=" + raw + ",format=vmdk"}, `"vmdk"`, false},
		{"unknown disk format", []string{"--disk", "file:a=" + x + ",format=vmdk"}, `"vmdk"`, false},
		{"duplicate tag", []string{"--disk", "file:a=" + x, "--disk", "file:a=" + y}, "tag a already used by --disk", false},
		{"not a filesystem image", []string{"-m", "host-image:/d=/etc/passwd"}, "no known filesystem", true},
		{"missing image", []string{"-m", "host-image:/d=" + dir + "/nonexistent.img"}, dir + "/nonexistent.img", false},
		{"qcow2 given as raw", []string{"-m", "host-image:/d=" + qcow + ",format=raw"}, qcow, false},
		{"missing root", []string{"-r", "/nonexistent-root"}, "/nonexistent-root", false},
		{"include outside writable places", []string{"-i", "/etc/x=/etc/hosts"}, `-i "/etc/x=/etc/hosts": /etc/x is not in a writable place`, false},
		{"missing include", []string{"-m", "ram:/mem=1M", "-i", "/mem/x=" + dir + "/nonexistent"}, dir + "/nonexistent", false},
		// The raw disk is mapped on a loop device before the qcow2 one is
		// refused: the loop device must go too.
		{"qcow2 disk on lxc", []string{"--disk", "file:a=" + raw, "--disk", "file:b=" + qcow}, "a qcow2 image needs QEMU", false},
	}
	for _, tc := range cases {
		for _, uri := range drivers {
			if driverName(uri) == "qemu" && !tc.qemu {
				continue
			}
			t.Run(tc.name+"/"+driverName(uri), func(t *testing.T) {
				before := traces(t)
				name := sandboxName(t, uri)
				args := append([]string{"-c", uri, "-n", name}, tc.args...)
				r := sandbox(t, opts{}, append(args, "/bin/true")...)
				checkRefused(t, r, tc.want)
				after := traces(t)
				if n := added(before.loops, after.loops); len(n) > 0 {
					t.Errorf("loop devices left behind: %v", n)
				}
				if after.mounts != before.mounts {
					t.Errorf("/proc/self/mountinfo has %d lines after the run, %d before", after.mounts, before.mounts)
				}
				if n := added(before.tempDirs, after.tempDirs); len(n) > 0 {
					t.Errorf("directories left behind: %v", n)
				}
				if n := added(before.leftovers, after.leftovers); len(n) > 0 {
					t.Errorf("left behind: %v", n)
				}
				checkGone(t, uri, name)
			})
		}
	}
}
