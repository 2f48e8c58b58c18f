package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"path"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The parsers below read the option syntax of the original virt-sandbox
// (-m, --disk, -N, -e, -s). They never touch the file system: the launcher
// resolves host paths later, when it prepares the run.
//
// Internal helpers return a bare reason; the exported functions prefix the
// option and its value and wrap ErrInvalid exactly once, so messages stay on
// one line and never repeat ErrInvalid's text. Every user-supplied value is
// printed with %q so control characters cannot split a message.

// Disk and host-image formats; "" means raw.
const (
	formatRaw   = "raw"
	formatQcow2 = "qcow2"
)

// Security label modes.
const (
	labelDynamic = "dynamic"
	labelStatic  = "static"
	labelInherit = "inherit"
)

var (
	envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// 20 bytes: the longest serial a virtio-blk disk carries.
	tagRE         = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,19}$`)
	filterParamRE = regexp.MustCompile(`^[A-Za-z0-9_]+$`)
)

// ParseSize parses a size such as 512, 512K, 64M, 64MiB, 3G or 1T and returns
// it in KiB.
//
// Units are K, M, G and T, case-insensitive, optionally followed by "iB" or
// "B"; all of them are binary (1K = 1024 bytes, 1MB = 1MiB). A number without
// a unit, or with only "B", is a byte count and is rounded up to whole KiB,
// as the original virt-sandbox read plain ram sizes as bytes (and as tmpfs
// reads its size=). Only whole numbers are accepted; a result that does not
// fit in uint64 KiB is an error.
func ParseSize(s string) (uint64, error) {
	kib, err := parseSize(s, "b")
	if err != nil {
		return 0, fmt.Errorf("%w: size %q: %v", ErrInvalid, s, err)
	}
	return kib, nil
}

// ParseMemory parses --memory and returns MiB, rounded up. Units are those
// of ParseSize, but a bare number is MiB, as qemu -m and virt-install
// --memory read it: nobody asks for a machine of 300 bytes.
func ParseMemory(s string) (uint64, error) {
	kib, err := parseSize(s, "m")
	if err == nil && kib == 0 {
		err = errors.New("must be more than 0")
	}
	if err != nil {
		return 0, fmt.Errorf("%w: --memory %q: %v", ErrInvalid, s, err)
	}
	return ceilDiv(kib, 1024), nil
}

// parseSize reads a size in KiB; bare is the unit of a number without one
// ("b" or "m"). Errors are bare reasons, for the caller to name the value.
func parseSize(s, bare string) (uint64, error) {
	i := 0
	for i < len(s) && '0' <= s[i] && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, errors.New("want a whole number with an optional unit K, M, G or T")
	}
	n, err := strconv.ParseUint(s[:i], 10, 64)
	if err != nil {
		// Only digits were passed, so the sole possible failure is range.
		return 0, errors.New("too large")
	}
	unit := s[i:]
	// ASCII-only folding: strings.EqualFold would also accept the Kelvin sign as K.
	u := asciiLower(unit)
	if u == "" {
		u = bare
	}
	var shift uint
	switch u {
	case "b":
		return ceilDiv(n, 1024), nil
	case "k", "kb", "kib":
		shift = 0
	case "m", "mb", "mib":
		shift = 10
	case "g", "gb", "gib":
		shift = 20
	case "t", "tb", "tib":
		shift = 30
	default:
		return 0, fmt.Errorf("unknown unit %q (want K, M, G or T, optionally followed by iB or B)", unit)
	}
	if n > math.MaxUint64>>shift {
		return 0, errors.New("too large")
	}
	return n << shift, nil
}

// ceilDiv is n/d rounded up: a size is never less than asked.
func ceilDiv(n, d uint64) uint64 {
	q := n / d
	if n%d != 0 {
		q++
	}
	return q
}

// asciiLower lower-cases ASCII letters and maps any non-ASCII string to one
// no unit matches.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= utf8.RuneSelf {
			return "\x00"
		}
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// ParseMount parses a -m option: TYPE:DST=SRC[,OPT...].
//
//	host-bind:DST=SRC     bind host directory SRC; an empty SRC asks for a
//	                      fresh temporary directory
//	host-image:DST=FILE   mount the filesystem image FILE; OPT format=raw|qcow2
//	guest-bind:DST=SRC    bind SRC, a path inside the sandbox
//	ram:DST=SIZE          tmpfs of SIZE (see ParseSize)
//
// OPT ro or readonly makes the mount read-only. DST must be absolute and is
// cleaned; it cannot be "/", which is Sandbox.Root's job. As in the original,
// the first comma starts the options; a comma in a path is written twice,
// as in QEMU's options (host-bind:/data=/srv/a,,b,ro).
// Host paths are kept as given, relative ones included: resolving them needs
// the launcher's working directory, which a pure parser does not have.
func ParseMount(spec string) (Mount, error) {
	m, err := parseMount(spec)
	if err != nil {
		return Mount{}, fmt.Errorf("%w: -m %q: %v", ErrInvalid, spec, err)
	}
	return m, nil
}

func parseMount(spec string) (Mount, error) {
	head, opts, hasOpts := cutOptions(spec)
	typ, rest, ok := strings.Cut(head, ":")
	if !ok {
		return Mount{}, errors.New("missing mount type (want TYPE:DST=SRC)")
	}
	m := Mount{Type: MountType(typ)}
	if !knownMountType(m.Type) {
		return Mount{}, fmt.Errorf("unknown mount type %q (want host-bind, host-image, guest-bind or ram)", typ)
	}
	dst, src, ok := strings.Cut(rest, "=")
	if !ok {
		return Mount{}, fmt.Errorf("missing \"=\" in %q (want %s:DST=SRC)", rest, typ)
	}
	if err := checkPath(dst); err != nil {
		return Mount{}, fmt.Errorf("target %q: %v", dst, err)
	}
	m.Target = path.Clean(dst)
	if err := checkMountTarget(m.Target); err != nil {
		return Mount{}, fmt.Errorf("target %q: %v", dst, err)
	}

	if err := m.setSource(src); err != nil {
		return Mount{}, err
	}
	if hasOpts {
		if err := m.setOptions(opts); err != nil {
			return Mount{}, err
		}
	}
	return m, nil
}

// setSource sets what is mounted, from the part after "=".
func (m *Mount) setSource(src string) error {
	switch m.Type {
	case HostBind:
		if err := checkPathChars(src); err != nil {
			return fmt.Errorf("source %q: %v", src, err)
		}
		m.Source = src
	case HostImage:
		if err := checkHostFile(src); err != nil {
			return fmt.Errorf("source %q: %v", src, err)
		}
		m.Source = src
	case GuestBind:
		if err := checkPath(src); err != nil {
			return fmt.Errorf("source %q: %v", src, err)
		}
		m.Source = path.Clean(src)
	case RAM:
		kib, err := parseSize(src, "b")
		if err != nil {
			return fmt.Errorf("size %q: %v", src, err)
		}
		if kib == 0 {
			return fmt.Errorf("size %q: must be more than 0", src)
		}
		m.SizeKiB = kib
	}
	return nil
}

// setOptions applies the comma-separated options after the source.
func (m *Mount) setOptions(opts string) error {
	for _, opt := range strings.Split(opts, ",") {
		key, val, hasVal := strings.Cut(opt, "=")
		switch {
		case opt == "":
			return errors.New("empty option")
		case opt == "ro" || opt == "readonly":
			m.ReadOnly = true
		case key == "format" && hasVal:
			if m.Type != HostImage {
				return fmt.Errorf("option %q: only host-image mounts have a format", opt)
			}
			if m.Format != "" {
				return fmt.Errorf("option %q: format given twice", opt)
			}
			if err := checkFormat(val); err != nil || val == "" {
				return fmt.Errorf("unknown format %q (want raw or qcow2)", val)
			}
			m.Format = val
		case m.Type == HostImage:
			return fmt.Errorf("unknown option %q (want ro, readonly or format=)", opt)
		default:
			return fmt.Errorf("unknown option %q (want ro or readonly)", opt)
		}
	}
	return nil
}

// ParseDisk parses a --disk option: file:TAG=SOURCE[,format=raw|qcow2].
// The guest shows the disk at /dev/disk/by-tag/TAG, so TAG must be a plain
// file name: 1-20 letters, digits, '_', '.' or '-', starting with a letter or
// digit (a virtio disk's serial holds 20 bytes). A comma in SOURCE is
// written twice.
func ParseDisk(spec string) (Disk, error) {
	d, err := parseDisk(spec)
	if err != nil {
		return Disk{}, fmt.Errorf("%w: --disk %q: %v", ErrInvalid, spec, err)
	}
	return d, nil
}

func parseDisk(spec string) (Disk, error) {
	head, opts, hasOpts := cutOptions(spec)
	typ, rest, ok := strings.Cut(head, ":")
	if !ok {
		return Disk{}, errors.New("missing disk type (want file:TAG=SOURCE)")
	}
	if typ != "file" {
		return Disk{}, fmt.Errorf("unknown disk type %q (want file)", typ)
	}
	tag, src, ok := strings.Cut(rest, "=")
	if !ok {
		return Disk{}, fmt.Errorf("missing \"=\" in %q (want file:TAG=SOURCE)", rest)
	}
	if err := checkTag(tag); err != nil {
		return Disk{}, fmt.Errorf("tag %q: %v", tag, err)
	}
	if err := checkHostFile(src); err != nil {
		return Disk{}, fmt.Errorf("source %q: %v", src, err)
	}
	d := Disk{Tag: tag, Source: src}
	if !hasOpts {
		return d, nil
	}
	for _, opt := range strings.Split(opts, ",") {
		key, val, hasVal := strings.Cut(opt, "=")
		switch {
		case opt == "":
			return Disk{}, errors.New("empty option")
		case key == "format" && hasVal:
			if d.Format != "" {
				return Disk{}, fmt.Errorf("option %q: format given twice", opt)
			}
			if err := checkFormat(val); err != nil || val == "" {
				return Disk{}, fmt.Errorf("unknown format %q (want raw or qcow2)", val)
			}
			d.Format = val
		default:
			return Disk{}, fmt.Errorf("unknown option %q (want format=)", opt)
		}
	}
	return d, nil
}

// ParseNetwork parses a -N option, a comma-separated list of:
//
//	dhcp                        configure the interface by DHCP
//	address=IP/PREFIX[%BCAST]   static address, repeatable; BCAST is IPv4 only
//	route=NET/PREFIX%GATEWAY    static route, repeatable; needs an address
//	source=NETWORK              libvirt network to attach to
//	mac=MAC                     unicast MAC address, stored as aa:bb:cc:dd:ee:ff
//	filter=NAME                 libvirt nwfilter to apply
//	filter.KEY=VALUE            nwfilter parameter; needs filter=
//
// Exactly one of dhcp and address= must be given: source= alone does not
// imply dhcp, so an interface never ends up silently unconfigured.
func ParseNetwork(spec string) (Network, error) {
	n, err := parseNetwork(spec)
	if err != nil {
		return Network{}, fmt.Errorf("%w: -N %q: %v", ErrInvalid, spec, err)
	}
	return n, nil
}

func parseNetwork(spec string) (Network, error) {
	if spec == "" {
		return Network{}, errors.New("empty (want dhcp, user or address=IP/PREFIX)")
	}
	var n Network
	for _, opt := range strings.Split(spec, ",") {
		if err := n.setOption(opt); err != nil {
			return Network{}, err
		}
	}
	if err := checkNetworkShape(n); err != nil {
		return Network{}, err
	}
	// QEMU's user-mode network hands out its address by DHCP.
	n.DHCP = n.DHCP || n.User
	return n, nil
}

const networkOptions = "dhcp, user, address=, route=, source=, mac=, filter= or filter.KEY="

// setOption applies one option of a -N spec.
func (n *Network) setOption(opt string) error {
	key, val, hasVal := strings.Cut(opt, "=")
	switch {
	case opt == "":
		return errors.New("empty option")
	case key == "dhcp" || key == "user":
		flag := map[string]*bool{"dhcp": &n.DHCP, "user": &n.User}[key]
		if hasVal {
			return fmt.Errorf("option %q: %s takes no value", opt, key)
		}
		if *flag {
			return fmt.Errorf("%s given twice", key)
		}
		*flag = true
	case !hasVal:
		return fmt.Errorf("unknown option %q (want %s)", opt, networkOptions)
	case key == "address":
		if err := checkAddress(val); err != nil {
			return fmt.Errorf("address %q: %v", val, err)
		}
		n.Addresses = append(n.Addresses, val)
	case key == "route":
		return n.addRoute(val)
	case key == "source":
		return setOnce(&n.Source, key, val)
	case key == "filter":
		return setOnce(&n.Filter, key, val)
	case key == "mac":
		mac, err := normalizeMAC(val)
		if err != nil {
			return fmt.Errorf("mac %q: %v", val, err)
		}
		return setOnce(&n.MAC, key, mac)
	case strings.HasPrefix(key, "filter."):
		return n.addFilterParam(opt, strings.TrimPrefix(key, "filter."), val)
	default:
		return fmt.Errorf("unknown option %q (want %s)", opt, networkOptions)
	}
	return nil
}

func (n *Network) addRoute(val string) error {
	dest, gw, ok := strings.Cut(val, "%")
	if !ok || gw == "" {
		return fmt.Errorf("route %q: missing gateway (want NET/PREFIX%%GATEWAY)", val)
	}
	r := Route{Dest: dest, Gateway: gw}
	if err := checkRoute(r); err != nil {
		return fmt.Errorf("route %q: %v", val, err)
	}
	n.Routes = append(n.Routes, r)
	return nil
}

func (n *Network) addFilterParam(opt, param, val string) error {
	if err := checkFilterParam(param, val); err != nil {
		return fmt.Errorf("option %q: %v", opt, err)
	}
	if _, dup := n.FilterParams[param]; dup {
		return fmt.Errorf("option %q: filter parameter %q given twice", opt, param)
	}
	if n.FilterParams == nil {
		n.FilterParams = make(map[string]string)
	}
	n.FilterParams[param] = val
	return nil
}

// setOnce stores the value of a single-valued option, refusing repeats so
// that "source=a,source=b" is not silently resolved either way.
func setOnce(dst *string, key, val string) error {
	switch {
	case val == "":
		return fmt.Errorf("%s=: empty value", key)
	case *dst != "":
		return fmt.Errorf("%s=%q: %s given twice", key, val, key)
	}
	*dst = val
	return nil
}

// ParseEnv parses an -e option, KEY=VALUE, and returns it as KEY=VALUE.
// KEY is a portable shell name; VALUE may contain '=' but no NUL byte.
func ParseEnv(spec string) (string, error) {
	if err := checkEnv(spec); err != nil {
		return "", fmt.Errorf("%w: -e %q: %v", ErrInvalid, spec, err)
	}
	return spec, nil
}

// ParseSecurity parses a -s option: dynamic, inherit or static,label=LABEL.
//
// label= swallows the rest of the option, commas included, because SELinux
// category sets contain commas (static,label=system_u:system_r:svirt_t:s0:c412,c355);
// it must therefore come last.
func ParseSecurity(spec string) (Security, error) {
	sec, err := parseSecurity(spec)
	if err != nil {
		return Security{}, fmt.Errorf("%w: -s %q: %v", ErrInvalid, spec, err)
	}
	return sec, nil
}

func parseSecurity(spec string) (Security, error) {
	if spec == "" {
		return Security{}, errors.New("empty (want dynamic, static,label=LABEL or inherit)")
	}
	var sec Security
	hasLabel := false
	for s := spec; ; {
		if v, ok := strings.CutPrefix(s, "label="); ok {
			sec.Value, hasLabel = v, true
			break
		}
		opt, next, more := strings.Cut(s, ",")
		switch opt {
		case labelDynamic, labelStatic, labelInherit:
			if sec.Label != "" {
				return Security{}, fmt.Errorf("%q after %q: want only one of dynamic, static or inherit", opt, sec.Label)
			}
			sec.Label = opt
		case "":
			return Security{}, errors.New("empty option")
		default:
			return Security{}, fmt.Errorf("unknown option %q (want dynamic, static, inherit or label=)", opt)
		}
		if !more {
			break
		}
		s = next
	}
	switch {
	case sec.Label == "":
		return Security{}, errors.New("no mode (want dynamic, static or inherit)")
	case hasLabel && sec.Label != labelStatic:
		return Security{}, fmt.Errorf("label= needs static, not %q", sec.Label)
	case sec.Label == labelStatic && sec.Value == "":
		return Security{}, errors.New("static needs a label (want static,label=LABEL)")
	}
	if err := checkNoNUL(sec.Value); err != nil {
		return Security{}, fmt.Errorf("label %q: %v", sec.Value, err)
	}
	return sec, nil
}

// Checks shared by the parsers and Validate. Each returns only the reason;
// the caller names the field and value.

var errRootTarget = errors.New("cannot mount over / (set the sandbox root instead)")

func knownMountType(t MountType) bool {
	switch t {
	case HostBind, HostImage, GuestBind, RAM:
		return true
	}
	return false
}

func checkNoNUL(s string) error {
	if strings.IndexByte(s, 0) >= 0 {
		return errors.New("contains a NUL byte")
	}
	return nil
}

// cutOptions splits a spec at its first single comma: before it the
// paths, with each doubled comma read as one, after it the options.
func cutOptions(spec string) (head, opts string, hasOpts bool) {
	var b strings.Builder
	for i := 0; i < len(spec); i++ {
		if spec[i] != ',' {
			b.WriteByte(spec[i])
			continue
		}
		if i+1 < len(spec) && spec[i+1] == ',' {
			b.WriteByte(',')
			i++
			continue
		}
		return b.String(), spec[i+1:], true
	}
	return b.String(), "", false
}

// checkPath accepts absolute sandbox paths, not necessarily clean.
func checkPath(p string) error {
	switch {
	case p == "":
		return errors.New("empty (want an absolute path)")
	case !path.IsAbs(p):
		return errors.New("not absolute (want a path starting with /)")
	}
	return checkPathChars(p)
}

func checkHostFile(p string) error {
	if p == "" {
		return errors.New("empty (want a file)")
	}
	return checkPathChars(p)
}

// checkPathChars refuses the control characters (a newline, a tab, NUL)
// that no path of a sandbox may hold: libvirt refuses them in a domain's
// paths, and they are far more often a mistake than a file's name.
func checkPathChars(p string) error {
	for _, r := range p {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("contains the control character %q", r)
		}
	}
	return nil
}

func checkFormat(f string) error {
	switch f {
	case "", formatRaw, formatQcow2:
		return nil
	}
	return errors.New("unknown (want raw or qcow2)")
}

func checkTag(tag string) error {
	if !tagRE.MatchString(tag) {
		return errors.New("want 1-20 letters, digits, '_', '.' or '-', starting with a letter or digit")
	}
	if strings.HasPrefix(tag, "sandbox-") {
		return errors.New("the sandbox- prefix is reserved for the sandbox's own devices")
	}
	return nil
}

func checkEnv(kv string) error {
	key, val, ok := strings.Cut(kv, "=")
	if !ok {
		return errors.New("missing \"=\" (want KEY=VALUE)")
	}
	if !envKeyRE.MatchString(key) {
		return fmt.Errorf("name %q: want letters, digits and '_', not starting with a digit", key)
	}
	if err := checkNoNUL(val); err != nil {
		return fmt.Errorf("value: %v", err)
	}
	return nil
}

// checkAddress accepts IP/PREFIX[%BCAST].
func checkAddress(a string) error {
	pfx, bcast, hasBcast := strings.Cut(a, "%")
	p, err := netip.ParsePrefix(pfx)
	if err != nil {
		return errors.New("want IP/PREFIX[%BROADCAST]")
	}
	if !hasBcast {
		return nil
	}
	b, err := netip.ParseAddr(bcast)
	if err != nil || !b.Is4() {
		return fmt.Errorf("broadcast %q: not an IPv4 address", bcast)
	}
	if !p.Addr().Is4() {
		return errors.New("a broadcast address needs an IPv4 address")
	}
	return nil
}

func checkRoute(r Route) error {
	d, err := netip.ParsePrefix(r.Dest)
	if err != nil {
		return fmt.Errorf("destination %q: want NET/PREFIX", r.Dest)
	}
	if r.Gateway == "" {
		return errors.New("missing gateway")
	}
	gw, err := netip.ParseAddr(r.Gateway)
	// A zone would name a host interface, which means nothing in the guest.
	if err != nil || gw.Zone() != "" {
		return fmt.Errorf("gateway %q: not an IP address", r.Gateway)
	}
	if gw.Is4() != d.Addr().Is4() {
		return fmt.Errorf("gateway %q: not the same IP version as destination %q", r.Gateway, r.Dest)
	}
	return nil
}

// normalizeMAC returns mac in the colon form libvirt writes.
func normalizeMAC(mac string) (string, error) {
	hw, err := net.ParseMAC(mac)
	switch {
	case err != nil:
		return "", errors.New("not a MAC address")
	case len(hw) != 6:
		return "", errors.New("not a 6-byte MAC address")
	case hw[0]&1 != 0:
		return "", errors.New("multicast, want a unicast MAC address")
	case string(hw) == "\x00\x00\x00\x00\x00\x00":
		return "", errors.New("all zeros, want a unicast MAC address")
	}
	return hw.String(), nil
}

func checkFilterParam(key, val string) error {
	if !filterParamRE.MatchString(key) {
		return fmt.Errorf("filter parameter %q: want letters, digits and '_'", key)
	}
	if val == "" {
		return fmt.Errorf("filter parameter %q: empty value", key)
	}
	return nil
}

// checkNetworkShape checks the rules that tie a network's fields together.
func checkNetworkShape(n Network) error {
	switch {
	case n.User && (n.Source != "" || n.Filter != "" || len(n.Addresses) > 0 || len(n.Routes) > 0):
		return errors.New("user cannot be combined with source=, address=, route= or filter= (QEMU's user-mode network gives its own address by DHCP, and has no libvirt network or filter)")
	case n.DHCP && len(n.Addresses) > 0:
		return fmt.Errorf("dhcp cannot be combined with addresses %q", n.Addresses)
	case !n.DHCP && !n.User && len(n.Addresses) == 0:
		return errors.New("needs dhcp, user or address=")
	case len(n.Routes) > 0 && len(n.Addresses) == 0:
		// DHCP brings its own routes; static ones need a static address to route from.
		return errors.New("route= needs address=")
	case len(n.FilterParams) > 0 && n.Filter == "":
		return errors.New("filter.KEY= needs filter=")
	}
	return nil
}

// ParseInclude parses -i: GUEST=HOST, or PATH for the same path on both
// sides.
func ParseInclude(spec string) (Include, error) {
	guest, host, ok := strings.Cut(spec, "=")
	if !ok {
		host = guest
	}
	inc := Include{Guest: path.Clean(guest), Host: host}
	if err := checkPath(guest); err != nil {
		return Include{}, fmt.Errorf("%w: -i %q: guest path %q: %v", ErrInvalid, spec, guest, err)
	}
	if host == "" {
		return Include{}, fmt.Errorf("%w: -i %q: empty host path", ErrInvalid, spec)
	}
	return inc, nil
}
