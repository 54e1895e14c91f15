package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestParseAllowlist(t *testing.T) {
	tests := []struct {
		name     string
		patterns []string
		want     string // String() of the result
		wantErr  string // substring of the error; "" means success
	}{
		{"empty", nil, "none", ""},
		{"exact name", []string{"App.Corp.Example:8080"}, "app.corp.example:8080", ""},
		{"trailing dot and spaces", []string{"  app.corp.example.:80 "}, "app.corp.example:80", ""},
		{"any port", []string{"localhost:*"}, "localhost:*", ""},
		{"wildcard", []string{"*.Corp.Example:443"}, "*.corp.example:443", ""},
		{"ipv4", []string{"127.0.0.1:9000"}, "127.0.0.1:9000", ""},
		{"ipv6", []string{"[::1]:9000"}, "[::1]:9000", ""},
		{"ipv6 any port", []string{"[0:0::1]:*"}, "[::1]:*", ""},
		{"mapped ipv4", []string{"[::ffff:10.0.0.1]:80"}, "10.0.0.1:80", ""},
		{"cidr", []string{"10.0.0.0/8"}, "10.0.0.0/8", ""},
		{"cidr masked", []string{"10.1.2.3/8"}, "10.0.0.0/8", ""},
		{"cidr port", []string{"10.0.0.0/8:443"}, "10.0.0.0/8:443", ""},
		{"cidr star port", []string{"10.0.0.0/8:*"}, "10.0.0.0/8", ""},
		{"cidr6", []string{"fd00::/8"}, "fd00::/8", ""},
		{"cidr6 port", []string{"fd00::/8:443"}, "fd00::/8:443", ""},
		{"cidr6 bracket port", []string{"[fd00::/8]:443"}, "fd00::/8:443", ""},
		{"mapped cidr", []string{"::ffff:10.0.0.0/104"}, "10.0.0.0/8", ""},
		{"several", []string{"127.0.0.1:9000", "*.corp.example:443", "10.0.0.0/8"}, "127.0.0.1:9000, *.corp.example:443, 10.0.0.0/8", ""},
		{"underscore", []string{"my_app.internal:80"}, "my_app.internal:80", ""},

		{"blank", []string{"  "}, "", "empty pattern"},
		{"missing port", []string{"app.corp.example"}, "", "missing port"},
		{"missing port ip", []string{"127.0.0.1"}, "", "missing port"},
		{"port zero", []string{"a.example:0"}, "", "invalid port"},
		{"port too big", []string{"a.example:65536"}, "", "invalid port"},
		{"named port", []string{"a.example:http"}, "", "invalid port"},
		{"empty port", []string{"a.example:"}, "", "invalid port"},
		{"bare star", []string{"*:*"}, "", "bare"},
		{"star suffix only", []string{"*.:80"}, "", "bare"},
		{"inner wildcard", []string{"a.*.example:80"}, "", "invalid host name"},
		{"partial wildcard", []string{"*foo.example:80"}, "", "invalid host name"},
		{"double dot", []string{"a..example:80"}, "", "invalid host name"},
		{"bad char", []string{"a b.example:80"}, "", "invalid host name"},
		{"empty host", []string{":80"}, "", "invalid host name"},
		{"ipv6 zone", []string{"[fe80::1%eth0]:80"}, "", "zone"},
		{"bad cidr", []string{"10.0.0.0/33"}, "", "allow pattern \"10.0.0.0/33\""},
		{"cidr empty port", []string{"10.0.0.0/8:"}, "", "invalid port"},
		{"cidr bad port", []string{"10.0.0.0/8:x"}, "", "invalid port"},
		{"cidr zone", []string{"fe80::%eth0/10"}, "", "allow pattern \"fe80::%eth0/10\""},
		{"second bad", []string{"127.0.0.1:9000", "nope"}, "", "\"nope\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := ParseAllowlist(tt.patterns)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseAllowlist(%q) error = %v, want it to contain %q", tt.patterns, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseAllowlist(%q): %v", tt.patterns, err)
			}
			if got := a.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}

// fakeAllowResolver answers from a table and counts lookups.
type fakeAllowResolver struct {
	mu    sync.Mutex
	calls []string
	addrs map[string][]string
}

func (r *fakeAllowResolver) LookupNetIP(_ context.Context, network, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	r.calls = append(r.calls, host)
	r.mu.Unlock()
	if network != "ip" {
		return nil, fmt.Errorf("unexpected network %q", network)
	}
	texts, ok := r.addrs[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	out := make([]netip.Addr, len(texts))
	for i, s := range texts {
		out[i] = netip.MustParseAddr(s)
	}
	return out, nil
}

func (r *fakeAllowResolver) lookups() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}

var allowTestZone = map[string][]string{
	"db.internal":     {"10.0.0.5"},
	"multi.internal":  {"10.0.0.5", "10.9.9.9"},
	"mixed.internal":  {"10.0.0.5", "8.8.8.8"},
	"out.internal":    {"192.0.2.1"},
	"mapped.internal": {"::ffff:10.0.0.9"},
	"v6.internal":     {"fd00::7"},
	"empty.internal":  {},
	"localhost":       {"127.0.0.1", "::1"},
}

func TestAllowlistAllowed(t *testing.T) {
	const (
		allowed  = "allowed"
		refused  = "refused"  // *NotAllowedError
		dnsError = "dnsError" // a wrapped *net.DNSError
	)
	tests := []struct {
		name        string
		patterns    []string
		target      string
		want        string
		wantLookups int
		resolved    string // NotAllowedError.Resolved, when set
	}{
		{"empty list", nil, "127.0.0.1:9000", refused, 0, ""},
		{"ip exact", []string{"127.0.0.1:9000"}, "127.0.0.1:9000", allowed, 0, ""},
		{"ip other port", []string{"127.0.0.1:9000"}, "127.0.0.1:9001", refused, 0, ""},
		{"ip other addr", []string{"127.0.0.1:9000"}, "127.0.0.2:9000", refused, 0, ""},
		{"ip pattern never resolves names", []string{"127.0.0.1:9000"}, "localhost:9000", refused, 0, ""},
		{"ip any port", []string{"127.0.0.1:*"}, "127.0.0.1:1", allowed, 0, ""},
		{"ipv6 exact", []string{"[::1]:9000"}, "[::1]:9000", allowed, 0, ""},
		{"ipv6 other spelling", []string{"[::1]:9000"}, "[0:0:0::1]:9000", allowed, 0, ""},
		{"mapped target", []string{"127.0.0.1:9000"}, "[::ffff:127.0.0.1]:9000", allowed, 0, ""},
		{"name exact", []string{"App.Corp.Example:8080"}, "app.corp.example:8080", allowed, 0, ""},
		{"name case and dot", []string{"app.corp.example:8080"}, "APP.corp.Example.:8080", allowed, 0, ""},
		{"name other port", []string{"app.corp.example:8080"}, "app.corp.example:8081", refused, 0, ""},
		{"name prefix trick", []string{"app.corp.example:8080"}, "xapp.corp.example:8080", refused, 0, ""},
		{"name suffix trick", []string{"app.corp.example:8080"}, "app.corp.example.evil:8080", refused, 0, ""},
		{"name any port", []string{"app.corp.example:*"}, "app.corp.example:65535", allowed, 0, ""},
		{"name does not match ip", []string{"localhost:80"}, "127.0.0.1:80", refused, 0, ""},
		{"wildcard one label", []string{"*.corp.example:443"}, "a.corp.example:443", allowed, 0, ""},
		{"wildcard two labels", []string{"*.corp.example:443"}, "a.b.corp.example:443", allowed, 0, ""},
		{"wildcard not apex", []string{"*.corp.example:443"}, "corp.example:443", refused, 0, ""},
		{"wildcard label boundary", []string{"*.corp.example:443"}, "acorp.example:443", refused, 0, ""},
		{"wildcard empty label", []string{"*.corp.example:443"}, ".corp.example:443", refused, 0, ""},
		{"wildcard port", []string{"*.corp.example:443"}, "a.corp.example:80", refused, 0, ""},
		{"wildcard any port", []string{"*.corp.example:*"}, "a.corp.example:80", allowed, 0, ""},
		{"wildcard does not match ip", []string{"*.0.0.1:80"}, "127.0.0.1:80", refused, 0, ""},
		{"cidr ip", []string{"10.0.0.0/8"}, "10.1.2.3:22", allowed, 0, ""},
		{"cidr ip outside", []string{"10.0.0.0/8"}, "11.0.0.1:80", refused, 0, ""},
		{"cidr mapped ip", []string{"10.0.0.0/8"}, "[::ffff:10.1.2.3]:80", allowed, 0, ""},
		{"cidr port", []string{"10.0.0.0/8:443"}, "10.1.2.3:443", allowed, 0, ""},
		{"cidr other port", []string{"10.0.0.0/8:443"}, "10.1.2.3:80", refused, 0, ""},
		{"cidr6", []string{"fd00::/8:443"}, "[fd12::1]:443", allowed, 0, ""},
		{"cidr6 port", []string{"2001:db8::/32:443"}, "[2001:db8::7]:443", allowed, 0, ""},
		{"cidr6 other port", []string{"2001:db8::/32:443"}, "[2001:db8::7]:80", refused, 0, ""},
		{"cidr6 v4 target", []string{"::/0"}, "10.0.0.1:443", refused, 0, ""},
		{"zoned target", []string{"fe80::/10"}, "[fe80::1%eth0]:80", refused, 0, ""},
		{"no port", []string{"10.0.0.0/8"}, "10.1.2.3", refused, 0, ""},
		{"port zero", []string{"10.0.0.0/8"}, "10.1.2.3:0", refused, 0, ""},
		{"named port", []string{"10.0.0.0/8"}, "10.1.2.3:http", refused, 0, ""},
		{"empty host", []string{"10.0.0.0/8"}, ":80", refused, 0, ""},
		{"name via cidr", []string{"10.0.0.0/8"}, "db.internal:5432", allowed, 1, ""},
		{"name via two cidrs", []string{"10.0.0.0/16", "10.9.0.0/16"}, "multi.internal:80", allowed, 1, ""},
		{"name mapped answer", []string{"10.0.0.0/8"}, "mapped.internal:80", allowed, 1, ""},
		{"name v6 answer", []string{"fd00::/8"}, "v6.internal:80", allowed, 1, ""},
		{"name one answer outside", []string{"10.0.0.0/8"}, "mixed.internal:80", refused, 1, "8.8.8.8"},
		{"name all outside", []string{"10.0.0.0/8"}, "out.internal:80", refused, 1, "192.0.2.1"},
		{"name no answers", []string{"10.0.0.0/8"}, "empty.internal:80", refused, 1, ""},
		{"name unresolvable", []string{"10.0.0.0/8"}, "gone.internal:80", dnsError, 1, ""},
		{"localhost half allowed", []string{"127.0.0.0/8"}, "localhost:80", refused, 1, "::1"},
		{"cidr port does not cover, no lookup", []string{"10.0.0.0/8:443"}, "db.internal:80", refused, 0, ""},
		{"name pattern wins, no lookup", []string{"db.internal:5432", "10.0.0.0/8"}, "db.internal:5432", allowed, 0, ""},
		{"cidr covering port after port-limited one", []string{"10.0.0.0/8:443", "10.0.0.0/16:80"}, "db.internal:80", allowed, 1, ""},
		{"answer must be covered by a rule for this port", []string{"10.0.0.0/16:80", "10.9.0.0/16:443"}, "multi.internal:80", refused, 1, "10.9.9.9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := ParseAllowlist(tt.patterns)
			if err != nil {
				t.Fatal(err)
			}
			res := &fakeAllowResolver{addrs: allowTestZone}
			a.LookupNetIP = res.LookupNetIP
			err = a.Allowed(t.Context(), tt.target)

			var na *NotAllowedError
			var dnsErr *net.DNSError
			switch tt.want {
			case allowed:
				if err != nil {
					t.Fatalf("Allowed(%q) = %v, want nil", tt.target, err)
				}
			case refused:
				if !errors.As(err, &na) {
					t.Fatalf("Allowed(%q) = %v, want *NotAllowedError", tt.target, err)
				}
				if na.HostPort != tt.target {
					t.Errorf("HostPort = %q, want %q", na.HostPort, tt.target)
				}
				var wantResolved netip.Addr
				if tt.resolved != "" {
					wantResolved = netip.MustParseAddr(tt.resolved)
				}
				if na.Resolved != wantResolved {
					t.Errorf("Resolved = %v, want %v", na.Resolved, wantResolved)
				}
			case dnsError:
				if !errors.As(err, &dnsErr) || errors.As(err, &na) {
					t.Fatalf("Allowed(%q) = %v (%T), want a *net.DNSError", tt.target, err, err)
				}
			}
			if got := res.lookups(); got != tt.wantLookups {
				t.Errorf("lookups = %d, want %d", got, tt.wantLookups)
			}
		})
	}
}

func TestAllowlistZeroAndNil(t *testing.T) {
	var na *NotAllowedError
	var nilList *Allowlist
	if err := nilList.Allowed(t.Context(), "127.0.0.1:80"); !errors.As(err, &na) {
		t.Errorf("nil Allowlist: Allowed = %v, want *NotAllowedError", err)
	}
	if got := nilList.String(); got != "none" {
		t.Errorf("nil Allowlist: String = %q", got)
	}
	var zero Allowlist
	if err := zero.Allowed(t.Context(), "127.0.0.1:80"); !errors.As(err, &na) {
		t.Errorf("zero Allowlist: Allowed = %v, want *NotAllowedError", err)
	}
}

func TestNotAllowedErrorMessage(t *testing.T) {
	tests := []struct {
		err  *NotAllowedError
		want []string
	}{
		{&NotAllowedError{HostPort: "10.1.2.3:22"}, []string{"10.1.2.3:22", "not allowed", "allow list must include"}},
		{&NotAllowedError{HostPort: "db.internal:80", Resolved: netip.MustParseAddr("8.8.8.8")}, []string{"db.internal:80", "8.8.8.8", "allow list must include"}},
	}
	for _, tt := range tests {
		msg := tt.err.Error()
		for _, w := range tt.want {
			if !strings.Contains(msg, w) {
				t.Errorf("%q does not contain %q", msg, w)
			}
		}
	}
}

// recordingAllowDialer records every address dialled and fails the ones listed.
type recordingAllowDialer struct {
	mu     sync.Mutex
	dialed []string
	fail   map[string]bool
}

func (d *recordingAllowDialer) dial(_ context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.dialed = append(d.dialed, network+" "+addr)
	d.mu.Unlock()
	if d.fail[addr] {
		return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("boom")}
	}
	c1, c2 := net.Pipe()
	c2.Close()
	return c1, nil
}

func TestAllowlistDialContext(t *testing.T) {
	tests := []struct {
		name       string
		patterns   []string
		network    string
		addr       string
		fail       []string
		wantDialed []string
		wantErr    string // "notallowed", "dial", "other" or ""
	}{
		{"name dialled as given", []string{"app.corp.example:8080"}, "tcp", "app.corp.example:8080", nil,
			[]string{"tcp app.corp.example:8080"}, ""},
		{"ip dialled as given", []string{"127.0.0.1:9000"}, "tcp", "127.0.0.1:9000", nil,
			[]string{"tcp 127.0.0.1:9000"}, ""},
		{"cidr name dialled at checked ip", []string{"10.0.0.0/8"}, "tcp", "db.internal:5432", nil,
			[]string{"tcp 10.0.0.5:5432"}, ""},
		{"cidr name falls back to next ip", []string{"10.0.0.0/8"}, "tcp", "multi.internal:80", []string{"10.0.0.5:80"},
			[]string{"tcp 10.0.0.5:80", "tcp 10.9.9.9:80"}, ""},
		{"cidr name all ips fail", []string{"10.0.0.0/8"}, "tcp", "multi.internal:80", []string{"10.0.0.5:80", "10.9.9.9:80"},
			[]string{"tcp 10.0.0.5:80", "tcp 10.9.9.9:80"}, "dial"},
		{"cidr name v6 ip", []string{"fd00::/8"}, "tcp", "v6.internal:80", nil,
			[]string{"tcp [fd00::7]:80"}, ""},
		{"tcp6 skips v4 answers", []string{"10.0.0.0/8", "fd00::/8"}, "tcp6", "v6.internal:80", nil,
			[]string{"tcp6 [fd00::7]:80"}, ""},
		{"tcp6 with only v4 answers", []string{"10.0.0.0/8"}, "tcp6", "db.internal:80", nil,
			nil, "dial"},
		{"tcp4 with v4 answer", []string{"10.0.0.0/8"}, "tcp4", "db.internal:80", nil,
			[]string{"tcp4 10.0.0.5:80"}, ""},
		{"refused never dials", []string{"10.0.0.0/8"}, "tcp", "out.internal:80", nil, nil, "notallowed"},
		{"refused ip never dials", []string{"127.0.0.1:9000"}, "tcp", "127.0.0.1:22", nil, nil, "notallowed"},
		{"udp refused", []string{"127.0.0.1:*"}, "udp", "127.0.0.1:53", nil, nil, "other"},
		{"unix refused", []string{"127.0.0.1:*"}, "unix", "/run/x.sock", nil, nil, "other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := ParseAllowlist(tt.patterns)
			if err != nil {
				t.Fatal(err)
			}
			a.LookupNetIP = (&fakeAllowResolver{addrs: allowTestZone}).LookupNetIP
			d := &recordingAllowDialer{fail: map[string]bool{}}
			for _, f := range tt.fail {
				d.fail[f] = true
			}
			c, err := a.DialContext(d.dial)(t.Context(), tt.network, tt.addr)
			if c != nil {
				c.Close()
			}
			var na *NotAllowedError
			var oe *net.OpError
			switch tt.wantErr {
			case "":
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
			case "notallowed":
				if !errors.As(err, &na) {
					t.Fatalf("dial error = %v, want *NotAllowedError", err)
				}
			case "dial":
				if !errors.As(err, &oe) || oe.Op != "dial" {
					t.Fatalf("dial error = %v, want a dial *net.OpError", err)
				}
			case "other":
				if err == nil || errors.As(err, &na) {
					t.Fatalf("dial error = %v, want a plain error", err)
				}
			}
			if !slices.Equal(d.dialed, tt.wantDialed) {
				t.Errorf("dialled %q, want %q", d.dialed, tt.wantDialed)
			}
		})
	}
}

// TestAllowlistDialPinsCheckedAnswer shows the DNS rebinding defence: the
// name is resolved once, checked, and the checked address is dialled even
// though a second lookup would now answer something else.
func TestAllowlistDialPinsCheckedAnswer(t *testing.T) {
	a, err := ParseAllowlist([]string{"10.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	n := 0
	a.LookupNetIP = func(context.Context, string, string) ([]netip.Addr, error) {
		mu.Lock()
		defer mu.Unlock()
		n++
		if n == 1 {
			return []netip.Addr{netip.MustParseAddr("10.0.0.5")}, nil
		}
		return []netip.Addr{netip.MustParseAddr("169.254.169.254")}, nil
	}
	d := &recordingAllowDialer{}
	c, err := a.DialContext(d.dial)(t.Context(), "tcp", "rebind.internal:80")
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if want := []string{"tcp 10.0.0.5:80"}; !slices.Equal(d.dialed, want) {
		t.Fatalf("dialled %q, want %q", d.dialed, want)
	}
	if n != 1 {
		t.Fatalf("%d lookups, want 1", n)
	}
}

func TestAllowlistDialContextStopsOnCancel(t *testing.T) {
	a, err := ParseAllowlist([]string{"10.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	a.LookupNetIP = (&fakeAllowResolver{addrs: allowTestZone}).LookupNetIP
	ctx, cancel := context.WithCancel(t.Context())
	var dialed []string
	dial := func(_ context.Context, _, addr string) (net.Conn, error) {
		dialed = append(dialed, addr)
		cancel()
		return nil, context.Canceled
	}
	if _, err := a.DialContext(dial)(ctx, "tcp", "multi.internal:80"); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if len(dialed) != 1 {
		t.Fatalf("dialled %q after cancel, want one attempt", dialed)
	}
}

// TestAllowlistDialContextNilDialer dials a real loopback listener with the
// default dialer.
func TestAllowlistDialContextNilDialer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			io.WriteString(c, "hi")
			c.Close()
		}
	}()
	a, err := ParseAllowlist([]string{"127.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	a.LookupNetIP = (&fakeAllowResolver{addrs: map[string][]string{"backend.test": {"127.0.0.1"}}}).LookupNetIP
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	c, err := a.DialContext(nil)(t.Context(), "tcp", net.JoinHostPort("backend.test", port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "hi" {
		t.Fatalf("read %q, %v", b, err)
	}
}

// TestAllowlistAskedAgain: an Allowlist that remembers the targets it
// allowed as given answers every question, asked again and again, in turns
// over more targets than it remembers, as a fresh Allowlist does; a name
// allowed only through a CIDR pattern is resolved every time it is asked
// about, so a changed answer is refused at once.
func TestAllowlistAskedAgain(t *testing.T) {
	patterns := []string{"127.0.0.1:9000", "app.corp.example:*", "*.svc.example:443", "10.0.0.0/8:5432", "[::1]:*"}
	a, err := ParseAllowlist(patterns)
	if err != nil {
		t.Fatal(err)
	}
	zone := map[string][]string{"db.internal": {"10.0.0.5"}}
	res := &fakeAllowResolver{addrs: zone}
	a.LookupNetIP = res.LookupNetIP
	targets := []string{
		"127.0.0.1:9000", "127.0.0.1:9001", "app.corp.example:80", "APP.corp.example.:8080",
		"a.svc.example:443", "b.svc.example:443", "b.svc.example:80", "[::1]:7", "[0::1]:8",
		"db.internal:5432", "db.internal:80", "localhost:9000", "evil.example:443", "127.0.0.1",
	}
	ctx := t.Context()
	asked := 0
	for round := range 5 {
		for i, target := range targets {
			if round == 4 && target == "db.internal:5432" {
				zone["db.internal"] = []string{"192.0.2.1"} // the name moved out of the range
			}
			fresh, err := ParseAllowlist(patterns)
			if err != nil {
				t.Fatal(err)
			}
			fresh.LookupNetIP = (&fakeAllowResolver{addrs: zone}).LookupNetIP
			want := fresh.Allowed(ctx, target)
			got := a.Allowed(ctx, target)
			if (got == nil) != (want == nil) {
				t.Fatalf("round %d, target %d (%s): Allowed says %v, a fresh allowlist %v", round, i, target, got, want)
			}
			if target == "db.internal:5432" {
				asked++
			}
		}
	}
	if got := res.lookups(); got != asked {
		t.Errorf("db.internal was resolved %d times for %d questions: a name allowed through a CIDR pattern must be resolved every time", got, asked)
	}
	if err := a.Allowed(ctx, "db.internal:5432"); err == nil {
		t.Error("db.internal:5432 allowed after its answer moved outside every range")
	}
}

// TestAllowlistAllowedAllocs: an allowed target (every exchange asks) costs
// no allocation; only a refusal makes its error.
func TestAllowlistAllowedAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector adds allocations; `make test` runs this test again without -race (go test -run 'Allocs$' ./agent/)")
	}
	a, err := ParseAllowlist([]string{"127.0.0.1:9000", "app.corp.example:*"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, target := range []string{"127.0.0.1:9000", "app.corp.example:443"} {
		if got := testing.AllocsPerRun(100, func() {
			if err := a.Allowed(ctx, target); err != nil {
				t.Fatal(err)
			}
		}); got != 0 {
			t.Errorf("Allowed(%s): %v allocations, want 0", target, got)
		}
	}
}
