package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
)

// Allowlist decides which backends the agent may call on the gateway's
// behalf. It is the agent's own line of defence: a compromised or
// misconfigured gateway must not be able to turn the agent into an open proxy
// into the private network, so everything not listed is refused.
//
// Each pattern is one of:
//
//	host:port            an exact host name, case-insensitive ("app.corp.example:8080")
//	*.suffix:port        any name with one or more labels in front of suffix:
//	                     "*.corp.example:443" matches "a.corp.example:443" and
//	                     "a.b.corp.example:443" but not "corp.example:443"
//	ip:port, [ip6]:port  an IP literal ("127.0.0.1:9000", "[::1]:9000")
//	cidr, cidr:port      a range of addresses, any port when none is given
//	                     ("10.0.0.0/8", "10.0.0.0/8:443", "fd00::/8:443")
//
// The port may be "*" (any port) in every form that carries one. A bare "*"
// host is refused: write 0.0.0.0/0 and ::/0 if every backend really is meant.
//
// How targets are matched:
//   - A host name target is compared with the name patterns as written; it is
//     never resolved for them.
//   - An IP literal target is matched by the ip:port and CIDR patterns.
//   - A host name target that no name pattern covers is resolved (only when a
//     CIDR pattern covers its port), and ALL of its addresses must fall in a
//     CIDR pattern that covers the port. ip:port patterns do not take part in
//     this: they match IP literal targets only.
//
// DNS rebinding: an answer checked now says nothing about the answer the
// dialer would get a moment later, so a name allowed through a CIDR pattern
// must be dialled at one of the checked addresses, never re-resolved. Allowed
// alone cannot guarantee that; use DialContext for every backend connection,
// which checks at dial time (so redirects and proxies cannot bypass it) and
// dials the checked addresses.
//
// IPv4-mapped IPv6 targets are treated as their IPv4 address. Addresses with
// an IPv6 zone ("fe80::1%eth0") never match.
//
// The zero value allows nothing, as does a nil *Allowlist. Methods are safe
// for concurrent use once the fields are set.
type Allowlist struct {
	// LookupNetIP resolves host names checked against CIDR patterns, with the
	// signature of (*net.Resolver).LookupNetIP and network "ip".
	// If nil, net.DefaultResolver.LookupNetIP is used.
	LookupNetIP func(ctx context.Context, network, host string) ([]netip.Addr, error)

	rules []allowRule // set by ParseAllowlist, never modified afterwards

	// allowed are the last targets ("host:port" as asked) that a rule
	// allowed as given, without resolving anything (see check): every
	// exchange asks about its backend, and that answer depends only on
	// the target and the rules. Parsing the target each time was 2.5% of
	// the agent's CPU in small exchanges. Names allowed through CIDR
	// patterns are never remembered: they are resolved every time.
	allowed [allowedSlots]atomic.Pointer[string]
	slot    atomic.Uint32 // turns over the slots that remember
}

// allowedSlots is how many allowed targets an Allowlist remembers: the
// backends an agent serves at a time are few.
const allowedSlots = 4

// NotAllowedError reports a backend the allowlist refused.
type NotAllowedError struct {
	// HostPort is the refused target as asked for.
	HostPort string
	// Resolved, if valid, is an address the target name resolved to that no
	// CIDR pattern covers.
	Resolved netip.Addr
}

func (e *NotAllowedError) Error() string {
	if e.Resolved.IsValid() {
		return fmt.Sprintf("backend %s is not allowed: it resolves to %s, outside every allowed range; the agent's allow list must include it",
			e.HostPort, e.Resolved)
	}
	return fmt.Sprintf("backend %s is not allowed: the agent's allow list must include it", e.HostPort)
}

// ParseAllowlist parses allow patterns (see Allowlist). An empty list allows
// nothing. The error names the first bad pattern.
func ParseAllowlist(patterns []string) (*Allowlist, error) {
	a := &Allowlist{rules: make([]allowRule, 0, len(patterns))}
	for _, p := range patterns {
		r, err := parseAllowRule(p)
		if err != nil {
			return nil, err
		}
		a.rules = append(a.rules, r)
	}
	return a, nil
}

// String lists the normalised patterns for logs, or "none".
func (a *Allowlist) String() string {
	if a == nil || len(a.rules) == 0 {
		return "none"
	}
	texts := make([]string, len(a.rules))
	for i := range a.rules {
		texts[i] = a.rules[i].String()
	}
	return strings.Join(texts, ", ")
}

// Allowed returns nil if the agent may call hostport ("host:port", the port
// always present). A refusal is a *NotAllowedError. When the target has to be
// resolved and resolution fails, the resolver's error is returned wrapped (a
// name that does not resolve is unreachable rather than forbidden).
//
// Allowed resolves but cannot pin the answer; connections must be made with
// DialContext (see the DNS rebinding note on Allowlist).
func (a *Allowlist) Allowed(ctx context.Context, hostport string) error {
	_, err := a.check(ctx, hostport)
	return err
}

// DialContext wraps dial (nil means a zero net.Dialer) so that every
// connection is checked against the allowlist at dial time. Targets allowed
// by a name or IP pattern are dialled as given; a name allowed through CIDR
// patterns is dialled at its checked addresses, tried in order until one
// connects, so a second DNS answer cannot smuggle in another address. Only
// TCP networks are supported.
func (a *Allowlist) DialContext(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		switch network {
		case "tcp", "tcp4", "tcp6":
		default:
			return nil, fmt.Errorf("allowlist: dial %s %s: only tcp is supported", network, addr)
		}
		ips, err := a.check(ctx, addr)
		if err != nil {
			return nil, err
		}
		if ips == nil {
			return dial(ctx, network, addr)
		}
		return dialChecked(ctx, dial, network, addr, ips)
	}
}

// dialChecked dials the first of ips that connects; addr is the original
// "host:port" whose port is used. It returns the first dial error.
func dialChecked(ctx context.Context, dial func(ctx context.Context, network, addr string) (net.Conn, error), network, addr string, ips []netip.Addr) (net.Conn, error) {
	_, port, _ := net.SplitHostPort(addr) // valid: check parsed it
	var firstErr error
	for _, ip := range ips {
		if (network == "tcp4" && !ip.Is4()) || (network == "tcp6" && !ip.Is6()) {
			continue
		}
		c, err := dial(ctx, network, net.JoinHostPort(ip.String(), port))
		if err == nil {
			return c, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	if firstErr == nil {
		firstErr = &net.OpError{Op: "dial", Net: network, Err: &net.AddrError{Err: "no allowed address of this family", Addr: addr}}
	}
	return nil, firstErr
}

// check decides on hostport. It returns (nil, nil) when the target may be
// dialled as given, the checked addresses when a name was allowed through CIDR
// patterns, or an error.
func (a *Allowlist) check(ctx context.Context, hostport string) ([]netip.Addr, error) {
	if a == nil || len(a.rules) == 0 {
		return nil, &NotAllowedError{HostPort: hostport}
	}
	for i := range a.allowed {
		if p := a.allowed[i].Load(); p != nil && *p == hostport {
			return nil, nil // a rule allowed it as given before
		}
	}
	t, ok := parseAllowTarget(hostport)
	if !ok {
		return nil, &NotAllowedError{HostPort: hostport}
	}
	// Fast path: a rule allows the target as given (no allocation once
	// remembered).
	for i := range a.rules {
		if a.rules[i].matches(t) {
			// A copy: the target may be cut from a large request head.
			s := strings.Clone(hostport)
			a.allowed[a.slot.Add(1)%allowedSlots].Store(&s)
			return nil, nil
		}
	}
	refuse := &NotAllowedError{HostPort: hostport}
	if t.ip.IsValid() || !a.hasRangeFor(t.port) {
		return nil, refuse
	}

	// Slow path: a name only CIDR patterns can allow. Resolve it and insist
	// that every answer is covered, so whichever address gets dialled is one
	// the operator allowed.
	lookup := a.LookupNetIP
	if lookup == nil {
		lookup = net.DefaultResolver.LookupNetIP
	}
	ips, err := lookup(ctx, "ip", t.host)
	if err != nil {
		return nil, fmt.Errorf("allowlist: resolve %s: %w", t.host, err)
	}
	if len(ips) == 0 {
		return nil, refuse
	}
	checked := make([]netip.Addr, len(ips))
	for i, ip := range ips {
		ip = ip.Unmap()
		if !a.rangeCovers(ip, t.port) {
			refuse.Resolved = ip
			return nil, refuse
		}
		checked[i] = ip
	}
	return checked, nil
}

// hasRangeFor reports whether any CIDR pattern covers port, i.e. whether
// resolving a name could possibly help.
func (a *Allowlist) hasRangeFor(port uint16) bool {
	for i := range a.rules {
		if a.rules[i].kind == ruleRange && a.rules[i].portOK(port) {
			return true
		}
	}
	return false
}

// rangeCovers reports whether a CIDR pattern covers the resolved ip and port.
func (a *Allowlist) rangeCovers(ip netip.Addr, port uint16) bool {
	for i := range a.rules {
		r := &a.rules[i]
		if r.kind == ruleRange && r.portOK(port) && r.prefix.Contains(ip) {
			return true
		}
	}
	return false
}

type ruleKind uint8

const (
	ruleName   ruleKind = iota // exact host name
	ruleSuffix                 // "*.suffix"
	ruleAddr                   // one IP literal, stored as a single-address prefix
	ruleRange                  // a CIDR
)

// allowRule is one parsed pattern, shared by the allowlist and the backend TLS
// profiles.
type allowRule struct {
	kind   ruleKind
	name   string       // ruleName: the host; ruleSuffix: ".suffix" with its dot
	prefix netip.Prefix // ruleAddr and ruleRange
	port   uint16       // 0 means any port
}

// allowTarget is a parsed "host:port" to check.
type allowTarget struct {
	host string     // lowercase, without a trailing dot
	ip   netip.Addr // valid when host is an IP literal (unmapped)
	port uint16     // never 0
}

func parseAllowTarget(hostport string) (allowTarget, bool) {
	host, portText, err := net.SplitHostPort(hostport)
	if err != nil {
		return allowTarget{}, false
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil || port == 0 {
		return allowTarget{}, false
	}
	t := allowTarget{host: normalizeAllowHost(host), port: uint16(port)}
	if t.host == "" {
		return allowTarget{}, false
	}
	if mayBeIP(t.host) {
		if ip, err := netip.ParseAddr(t.host); err == nil {
			t.ip = ip.Unmap()
		}
	}
	return t, true
}

// mayBeIP reports whether netip.ParseAddr could accept s: an IPv6 address
// has a colon, an IPv4 one only digits and dots. Names skip ParseAddr,
// whose error for them is an allocation on every exchange.
func mayBeIP(s string) bool {
	if strings.IndexByte(s, ':') >= 0 {
		return true
	}
	for i := 0; i < len(s); i++ {
		if (s[i] < '0' || s[i] > '9') && s[i] != '.' {
			return false
		}
	}
	return true
}

func normalizeAllowHost(host string) string {
	return strings.ToLower(strings.TrimSuffix(host, "."))
}

func (r *allowRule) portOK(port uint16) bool { return r.port == 0 || r.port == port }

// matches reports whether r covers t without resolving anything: name
// patterns compare names, IP and CIDR patterns compare IP literals.
func (r *allowRule) matches(t allowTarget) bool {
	if !r.portOK(t.port) {
		return false
	}
	switch r.kind {
	case ruleName:
		return !t.ip.IsValid() && t.host == r.name
	case ruleSuffix:
		return !t.ip.IsValid() && len(t.host) > len(r.name) && strings.HasSuffix(t.host, r.name)
	default:
		return t.ip.IsValid() && r.prefix.Contains(t.ip)
	}
}

func (r *allowRule) String() string {
	port := "*"
	if r.port != 0 {
		port = strconv.Itoa(int(r.port))
	}
	switch r.kind {
	case ruleName:
		return r.name + ":" + port
	case ruleSuffix:
		return "*" + r.name + ":" + port
	case ruleAddr:
		return net.JoinHostPort(r.prefix.Addr().String(), port)
	default:
		if r.port == 0 {
			return r.prefix.String()
		}
		return r.prefix.String() + ":" + port
	}
}

var errMissingPort = errors.New("missing port: write host:port, host:* or a CIDR such as 10.0.0.0/8")

// parseAllowRule parses one pattern.
func parseAllowRule(pattern string) (allowRule, error) {
	r, err := parseAllowRuleText(strings.TrimSpace(pattern))
	if err != nil {
		return allowRule{}, fmt.Errorf("allow pattern %q: %w", pattern, err)
	}
	return r, nil
}

func parseAllowRuleText(p string) (allowRule, error) {
	if p == "" {
		return allowRule{}, errors.New("empty pattern")
	}
	if strings.Contains(p, "/") {
		return parseAllowRange(p)
	}
	host, portText, err := net.SplitHostPort(p)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) && ae.Err == "missing port in address" {
			return allowRule{}, errMissingPort
		}
		return allowRule{}, err
	}
	port, err := parseAllowPort(portText)
	if err != nil {
		return allowRule{}, err
	}
	host = normalizeAllowHost(host)
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			return allowRule{}, errors.New("IPv6 zones are not supported")
		}
		ip = ip.Unmap()
		return allowRule{kind: ruleAddr, prefix: netip.PrefixFrom(ip, ip.BitLen()), port: port}, nil
	}
	if suffix, ok := strings.CutPrefix(host, "*."); ok {
		if !validAllowHostName(suffix) {
			return allowRule{}, fmt.Errorf("invalid host name %q after \"*.\"", suffix)
		}
		return allowRule{kind: ruleSuffix, name: "." + suffix, port: port}, nil
	}
	if host == "*" {
		return allowRule{}, errors.New("a bare \"*\" host would allow every backend; list names or write CIDRs such as 0.0.0.0/0 and ::/0")
	}
	if !validAllowHostName(host) {
		return allowRule{}, fmt.Errorf("invalid host name %q (a wildcard may only be a leading \"*.\")", host)
	}
	return allowRule{kind: ruleName, name: host, port: port}, nil
}

// parseAllowRange parses "cidr", "cidr:port" or "[cidr]:port".
func parseAllowRange(p string) (allowRule, error) {
	cidr, portText, hasPort := p, "", false
	if strings.HasPrefix(p, "[") {
		var err error
		if cidr, portText, err = net.SplitHostPort(p); err != nil {
			return allowRule{}, err
		}
		hasPort = true
	} else {
		// The prefix length never contains ':', so a colon after the
		// slash can only start a port, even for IPv6.
		slash := strings.LastIndexByte(p, '/')
		if c := strings.IndexByte(p[slash:], ':'); c >= 0 {
			cidr, portText, hasPort = p[:slash+c], p[slash+c+1:], true
		}
	}
	prefix, err := netip.ParsePrefix(cidr)
	if err != nil {
		return allowRule{}, err
	}
	if prefix.Addr().Zone() != "" {
		return allowRule{}, errors.New("IPv6 zones are not supported")
	}
	if prefix.Addr().Is4In6() && prefix.Bits() >= 96 {
		prefix = netip.PrefixFrom(prefix.Addr().Unmap(), prefix.Bits()-96)
	}
	r := allowRule{kind: ruleRange, prefix: prefix.Masked()}
	if hasPort {
		if r.port, err = parseAllowPort(portText); err != nil {
			return allowRule{}, err
		}
	}
	return r, nil
}

// parseAllowPort parses a port number or "*" (returned as 0).
func parseAllowPort(s string) (uint16, error) {
	if s == "*" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("invalid port %q: want 1-65535 or *", s)
	}
	return uint16(n), nil
}

// validAllowHostName accepts dot-separated labels of letters, digits, '-' and
// '_' (seen in real internal names), each 1-63 bytes long.
func validAllowHostName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
