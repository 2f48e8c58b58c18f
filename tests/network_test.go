package tests

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The tests' own libvirt network: isolated (no forward mode), on a subnet
// nothing else here uses. Sandboxes reach nothing beyond it.
const (
	testNet    = "vsb-test"
	testBridge = "vsbtest0"
	testPrefix = "10.251.213"
)

// isolatedNetwork defines the test network for the duration of t.
func isolatedNetwork(t *testing.T) {
	t.Helper()
	if out, _ := exec.Command("ip", "route").Output(); strings.Contains(string(out), testPrefix+".") {
		t.Fatalf("subnet %s.0/24 is in use on this host:\n%s", testPrefix, out)
	}
	// no-ping: dnsmasq otherwise pings every address for 3 s before it
	// offers it.
	xml := fmt.Sprintf(`<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>
<name>%s</name><bridge name='%s' stp='off'/>
<ip address='%s.1' netmask='255.255.255.0'><dhcp><range start='%s.100' end='%s.200'/></dhcp></ip>
<dnsmasq:options><dnsmasq:option value='no-ping'/></dnsmasq:options></network>`,
		testNet, testBridge, testPrefix, testPrefix, testPrefix)
	cmd := exec.Command("virsh", "-q", "-c", "qemu:///system", "net-create", "/dev/stdin")
	cmd.Stdin = strings.NewReader(xml)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("defining the test network: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("virsh", "-q", "-c", "qemu:///system", "net-destroy", testNet).Run() })
}

// TestNetwork shows, on both drivers: a DHCP address and a TCP connection to
// a server the test runs on the bridge; a static address and route; two
// interfaces; the sandbox's own resolv.conf and hostname.
func TestNetwork(t *testing.T) {
	isolatedNetwork(t)
	ln, err := net.Listen("tcp", testPrefix+".1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "hello %s\n", c.RemoteAddr().(*net.TCPAddr).IP)
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	onEachDriver(t, func(t *testing.T, uri string) {
		script := fmt.Sprintf(`ip -4 -o addr show | awk '{print $2, $4}'
ip -4 route | grep -v 'proto kernel'
cat /etc/resolv.conf
hostname
exec 3<>/dev/tcp/%s.1/%d 2>/dev/null || exec python3 -c 'import socket; s=socket.create_connection(("%s.1", %d)); print(s.makefile().readline(), end="")'
head -1 <&3`, testPrefix, port, testPrefix, port)
		r := sandbox(t, opts{}, "-c", uri, "-n", "sandbox-net-"+driverName(uri),
			"-N", "dhcp,source="+testNet,
			"-N", "address="+testPrefix+".50/24%"+testPrefix+".255,route=10.99.0.0/16%"+testPrefix+".1,source="+testNet+",mac=52:54:00:aa:bb:cc",
			"/bin/bash", "-c", script)
		if r.code != 0 {
			t.Fatalf("exit %d; stderr:\n%s", r.code, r.stderr)
		}
		out := r.stdout
		for _, want := range []string{
			"eth1 " + testPrefix + ".50/24",         // static
			"10.99.0.0/16 via " + testPrefix + ".1", // static route
			"nameserver " + testPrefix + ".1",       // from DHCP
			"sandbox-net-" + driverName(uri),        // hostname
			"hello " + testPrefix + ".",             // TCP to the bridge
		} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		var dhcp string
		sc := bufio.NewScanner(strings.NewReader(out))
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "eth0" {
				dhcp = f[1]
			}
		}
		if !strings.HasPrefix(dhcp, testPrefix+".") || !strings.HasSuffix(dhcp, "/24") {
			t.Errorf("eth0 address %q, want a DHCP lease in %s.0/24:\n%s", dhcp, testPrefix, out)
		}
	})
}

// TestNoNetwork: without -N a sandbox has loopback only, and it is up.
func TestNoNetwork(t *testing.T) {
	onEachDriver(t, func(t *testing.T, uri string) {
		r := sandbox(t, opts{}, "-c", uri, "/bin/sh", "-c", "ip -o link show | awk '{print $2, $3}'")
		r.want(t, 0, "lo: <LOOPBACK,UP,LOWER_UP>\n")
	})
}

// TestNetworkFilter: a filter= reference is in the domain's definition.
func TestNetworkFilter(t *testing.T) {
	isolatedNetwork(t)
	name := "sandbox-filter-test"
	cmd := exec.Command(launcher, "-n", name, "-N", "dhcp,source="+testNet+",filter=clean-traffic,filter.IP="+testPrefix+".77",
		"/bin/sh", "-c", "echo up; exec sleep 600")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		// Forwarded to the program: the launcher ends and cleans up.
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "up\n" {
		t.Fatalf("sandbox did not come up: %q, %v", line, err)
	}
	xml, err := exec.Command("virsh", "-c", "lxc:///", "dumpxml", name).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<filterref filter='clean-traffic'>", "<parameter name='IP' value='" + testPrefix + ".77'/>"} {
		if !strings.Contains(string(xml), want) {
			t.Errorf("domain XML lacks %s:\n%s", want, xml)
		}
	}
}

// TestNetworkBadInput: bad specs are refused with one line.
func TestNetworkBadInput(t *testing.T) {
	for _, tc := range []struct{ spec, want string }{
		{"dhcp,address=10.0.0.2/24", "dhcp"},
		{"address=10.0.0.2/24,route=10.1.0.0/16", "route"},
		{"dhcp,colour=blue", "colour"},
		{"dhcp,mac=zz:zz", "zz:zz"},
		{"dhcp,source=no-such-network", "no-such-network"},
	} {
		before := leftovers()
		r := sandbox(t, opts{timeout: time.Minute}, "-N", tc.spec, "/bin/true")
		checkRefused(t, r, tc.want)
		if after := leftovers(); len(after) > len(before) {
			t.Errorf("-N %s: left behind %v", tc.spec, after)
		}
	}
}

// TestServiceAddress: a networked service's status and list --json show
// its address, and a server the service runs answers there from the host.
func TestServiceAddress(t *testing.T) {
	isolatedNetwork(t)
	onEachDriver(t, func(t *testing.T, uri string) {
		c := rootCaller
		name := newService(t, c, uri, "addr", []string{"-N", "dhcp,source=" + testNet}, "/usr/bin/python3", "-m", "http.server", "8123")
		c.ok(t, "", "start", name)
		var addr string
		for deadline := time.Now().Add(2 * time.Minute); addr == "" && time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
			out := c.svc(t, "status", name).stdout
			if _, a, ok := strings.Cut(strings.TrimSpace(out), ": running at "); ok {
				addr = a
			}
		}
		if !strings.HasPrefix(addr, testPrefix+".") {
			t.Fatalf("status never showed an address in %s.0/24 (last %q)", testPrefix, addr)
		}
		var listed bool
		for _, s := range listServices(t, c) {
			listed = listed || (s.Name == name && len(s.Addresses) == 1 && s.Addresses[0] == addr)
		}
		if !listed {
			t.Errorf("list --json does not show %s at %s", name, addr)
		}
		var got string
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
			if resp, err := http.Get("http://" + addr + ":8123/"); err == nil {
				got = resp.Status
				resp.Body.Close()
				break
			}
		}
		if got != "200 OK" {
			t.Errorf("GET http://%s:8123/ from the host: %q, want 200 OK", addr, got)
		}
	})
}
