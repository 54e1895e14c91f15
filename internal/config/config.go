// Package config loads and checks the YAML files that configure the gateway
// (gateway.yaml) and the connector agent (agent.yaml).
//
// Loading is three steps, all in this package:
//
//  1. The file is parsed into a yaml.Node tree, which keeps the line of every
//     key and value (syntax errors, empty files and multi-document files stop
//     here).
//  2. The same bytes are decoded strictly into the Gateway or Agent struct:
//     unknown keys and values of the wrong type are errors that name the file
//     and the line, e.g. `gateway.yaml:7: unknown key "bogus" in apps[0]`.
//  3. The struct is validated; each problem names the file, the line of the
//     offending value (found again in the node tree) and its key path, e.g.
//     `gateway.yaml:12: apps[1].backend: must be an http:// or https:// URL`.
//
// All problems found in one step are reported together (errors.Join of
// *Error values). The structs keep exactly what the file said: a zero field
// means "not set" and the XxxOrDefault accessor methods supply the default,
// so structs built in code work too. Validation does normalise a few values
// in place (host names and patterns are lowercased).
//
// Relative file and directory paths are relative to the process's working
// directory, not to the config file. There are no environment overrides
// here; the one documented override (SALLYPORT_ADMIN_TOKEN) belongs to the
// admin API code.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
)

// Error is one problem in a configuration file.
type Error struct {
	File string // name of the file as given to Load or Parse; empty for configs built in code
	Line int    // 1-based line of the offending key or value; 0 when there is no single place
	Path string // key path such as "apps[1].backend"; empty for problems with the file as a whole
	Msg  string // what is wrong, lowercase, no trailing period
}

// Error formats e as "file:line: path: msg", leaving out the parts that are empty.
func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			b.WriteString(":")
			b.WriteString(strconv.Itoa(e.Line))
		}
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// source is where a parsed configuration came from, so that a problem
// found after parsing (a file that a setting names cannot be read) can
// name the config file and line. The zero value, for a configuration
// built in code, names neither.
type source struct {
	file string
	root *yaml.Node
}

// fileError reports err, a problem with the file (or environment
// variable) that the setting at key names, as an *Error at that setting's
// line that says what to do. key is
// a path as Error.Path spells it: "public.tls",
// "oidc.providers[0].client_secret_file".
func (s source) fileError(key string, err error) error {
	hint := "fix the path, or the file's contents or permissions"
	if strings.HasSuffix(key, "_env") {
		hint = "set the variable in the environment the process starts with"
	}
	c := &checker{file: s.file, root: s.root}
	c.errorf(parseKeyPath(key), "%v (%s)%s", err, hint, relativePathNote(err))
	return c.errs[0]
}

// relativePathNote says where a relative path that err names (an
// *fs.PathError) was looked for: the working directory, not the config
// file's (workingDirOf).
func relativePathNote(err error) string {
	pe, ok := errors.AsType[*fs.PathError](err)
	if !ok || pe.Path == "" {
		return ""
	}
	wd, _, ok := workingDirOf(pe.Path)
	if !ok {
		return ""
	}
	return fmt.Sprintf(" (relative paths are taken from the working directory %s, not the config file's)", wd)
}

// RelativeDirNote says, for a relative dir that a command looked in,
// where it was looked for and where that is: "; a relative path, taken
// from the working directory WD, so WD/dir, not from the config file's
// directory" (workingDirOf). It is "" for an absolute dir.
func RelativeDirNote(dir string) string {
	wd, abs, ok := workingDirOf(dir)
	switch {
	case !ok:
		return ""
	case abs == "":
		return "; a relative path, taken from the working directory " + wd
	}
	return fmt.Sprintf("; a relative path, taken from the working directory %s, so %s, not from the config file's directory", wd, abs)
}

// workingDirOf returns, for a relative path p, the working directory it
// is taken from (which under systemd is / unless WorkingDirectory= is
// set), not the config file's, and p there; ok is false for an absolute
// p. When the working directory cannot be found, wd says so and abs is "".
func workingDirOf(p string) (wd, abs string, ok bool) {
	if filepath.IsAbs(p) {
		return "", "", false
	}
	wd, err := os.Getwd()
	if err != nil {
		return "(unknown: " + err.Error() + ")", "", true
	}
	return wd, filepath.Join(wd, p), true
}

// settingError reports err, which says itself what to do, at key's line.
func (s source) settingError(key string, err error) error {
	c := &checker{file: s.file, root: s.root}
	c.errorf(parseKeyPath(key), "%v", err)
	return c.errs[0]
}

// parseKeyPath is the inverse of path.String.
func parseKeyPath(s string) path {
	var p path
	for _, part := range strings.Split(s, ".") {
		name, rest, _ := strings.Cut(part, "[")
		if name != "" {
			p = p.key(name)
		}
		for rest != "" {
			num, after, ok := strings.Cut(rest, "]")
			i, err := strconv.Atoi(num)
			if !ok || err != nil {
				break
			}
			p = p.index(i)
			rest = strings.TrimPrefix(after, "[")
		}
	}
	return p
}

// readFile reads a config file, wrapping the error once.
func readFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return data, nil
}

// decode runs steps 1 and 2 (see the package comment): it parses data into
// out, a pointer to a struct, rejecting unknown keys, and returns the root
// mapping node for line look-ups during validation.
func decode(name string, data []byte, out any) (*yaml.Node, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Error{File: name, Msg: "file is empty; expected a YAML mapping of settings"}
		}
		return nil, syntaxError(name, data, err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		return nil, &Error{File: name, Line: extra.Line, Msg: "a second YAML document (after ---) is not supported; put all settings in one document"}
	case !errors.Is(err, io.EOF):
		return nil, syntaxError(name, data, err)
	}

	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil, &Error{File: name, Msg: "file is empty; expected a YAML mapping of settings"}
	}
	if root.Kind != yaml.MappingNode {
		return nil, &Error{File: name, Line: root.Line, Msg: "the top level must be a mapping of settings (key: value)"}
	}

	// yaml.v3 drops null list items, which would shift the indexes used to
	// find lines during validation; they are mistakes anyway.
	if errs := nullItems(name, root, nil, nil); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	strict := yaml.NewDecoder(bytes.NewReader(data))
	strict.KnownFields(true)
	if err := strict.Decode(out); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return nil, typeErrors(name, root, reflect.TypeOf(out), te)
		}
		// data parses as YAML (a merge key's value that is no mapping,
		// say): no line of it is broken, so none is looked for (the
		// search named the file's last line).
		return nil, syntaxError(name, nil, err)
	}
	return root, nil
}

// nullItems reports every empty (null) list item below n.
func nullItems(name string, n *yaml.Node, p path, errs []error) []error {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			errs = nullItems(name, n.Content[i+1], p.key(n.Content[i].Value), errs)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			if c.Kind == yaml.ScalarNode && c.Tag == "!!null" {
				errs = append(errs, &Error{File: name, Line: c.Line, Path: p.index(i).String(), Msg: "empty list item"})
				continue
			}
			errs = nullItems(name, c, p.index(i), errs)
		}
	}
	return errs
}

// The patterns of yaml.v3's messages are compiled when a config has
// errors, not in every process at start-up.
var yamlLineRE = lazyRE(`^yaml: line (\d+): (.*)$`)

func lazyRE(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}

// syntaxError rewrites yaml.v3's "yaml: line 3: msg" as "file:3: msg",
// with the line and hint of placeSyntaxError (yamlsyntax.go).
func syntaxError(name string, data []byte, err error) error {
	msg := err.Error()
	if m := yamlLineRE().FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return placeSyntaxError(&Error{File: name, Line: line, Msg: m[2]}, data)
	}
	return placeSyntaxError(&Error{File: name, Msg: strings.TrimPrefix(msg, "yaml: ")}, data)
}

var (
	unknownFieldRE = lazyRE("^line (\\d+): field (.*) not found in type (\\S+)$")
	unmarshalRE    = lazyRE("^line (\\d+): cannot unmarshal (!!\\w+)(?: `(.*)`)? into (.+)$")
	duplicateKeyRE = lazyRE(`^line (\d+): mapping key (".*") already defined at line (\d+)$`)
	otherLineRE    = lazyRE(`^line (\d+): (.*)$`)
)

// typeErrors rewrites each of yaml.v3's decoding errors ("line 7: field bogus
// not found in type config.App") into an *Error that names the file, the
// line, the key path where it can be found, and says what was expected.
func typeErrors(name string, root *yaml.Node, outType reflect.Type, te *yaml.TypeError) error {
	var keys map[string][]string // Go type name → its YAML keys; built on first use
	errs := make([]error, 0, len(te.Errors))
	for _, s := range te.Errors {
		e := &Error{File: name, Msg: s}
		if m := unknownFieldRE().FindStringSubmatch(s); m != nil {
			e.Line, _ = strconv.Atoi(m[1])
			e.Msg = fmt.Sprintf("unknown key %q", m[2])
			if p, ok := findKey(root, nil, e.Line, m[2]); ok && len(p) > 0 {
				e.Msg += " in " + p.String()
			}
			if keys == nil {
				keys = yamlKeys(outType)
			}
			if hint := keyHints[m[3]+"."+m[2]]; hint != "" {
				e.Msg += " (" + hint + ")"
			} else if hint := closest(m[2], keys[m[3]]); hint != "" {
				e.Msg += fmt.Sprintf(" (did you mean %q?)", hint)
			}
		} else if m := unmarshalRE().FindStringSubmatch(s); m != nil {
			e.Line, _ = strconv.Atoi(m[1])
			got := describeTag(m[2], m[3])
			if p, n := findValue(root, nil, e.Line, tagKind(m[2]), strings.TrimSuffix(m[3], "...")); n != nil {
				e.Path = p.String()
				if n.Kind == yaml.ScalarNode {
					got = strconv.Quote(n.Value)
				}
			}
			e.Msg = fmt.Sprintf("want %s, got %s", describeType(m[4]), got)
		} else if m := duplicateKeyRE().FindStringSubmatch(s); m != nil {
			e.Line, _ = strconv.Atoi(m[1])
			e.Msg = fmt.Sprintf("key %s is repeated (first on line %s)", m[2], m[3])
		} else if m := otherLineRE().FindStringSubmatch(s); m != nil {
			e.Line, _ = strconv.Atoi(m[1])
			e.Msg = m[2]
		}
		errs = append(errs, e)
	}
	return errors.Join(errs...)
}

// keyHints are the hints for unknown keys that users write expecting them
// to exist, by "Go type.key" as yaml.v3 names them.
var keyHints = map[string]string{
	"config.Agent.token_file": `the agent config takes the enrollment token itself in "token"; to keep it in a file, ` +
		`enroll once with sallyport agent enroll --token-file FILE and leave "token" out`,
}

// describeType turns a Go type from a yaml.v3 message into words.
func describeType(goType string) string {
	switch {
	case goType == "time.Duration":
		return `a duration such as "30s" or "1m30s"`
	case goType == "int" || goType == "int64":
		return "a whole number"
	case goType == "bool":
		return "true or false"
	case goType == "string":
		return "a string"
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	case strings.HasPrefix(goType, "config.") || strings.HasPrefix(goType, "map["):
		return "a mapping (key: value)"
	}
	return goType
}

// describeTag says what a YAML node with this tag and (possibly truncated) value is.
func describeTag(tag, value string) string {
	switch tag {
	case "!!map":
		return "a mapping"
	case "!!seq":
		return "a list"
	}
	return strconv.Quote(value)
}

// yamlKeys maps each struct type reachable from t (by its String form, such
// as "config.App") to the YAML keys it accepts, for "did you mean" hints.
func yamlKeys(t reflect.Type) map[string][]string {
	out := make(map[string][]string)
	var walk func(reflect.Type)
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return
		}
		if _, seen := out[t.String()]; seen {
			return
		}
		out[t.String()] = nil
		for i := range t.NumField() {
			f := t.Field(i)
			key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if key == "" || key == "-" {
				continue
			}
			out[t.String()] = append(out[t.String()], key)
			walk(f.Type)
		}
	}
	walk(t)
	return out
}

// closest returns the candidate within edit distance 2 of s, singular
// and plural forms counted as the same ("trusted_proxy" for
// "trusted_proxies", 3 edits apart), else the only candidate that s
// begins ("max_stalled" for "max_stalled_exchanges"), else "".
func closest(s string, candidates []string) string {
	best, bestDist := "", 3
	for _, c := range candidates {
		d := min(editDistance(s, c), editDistance(singular(s), singular(c)))
		if d < bestDist {
			best, bestDist = c, d
		}
	}
	if best != "" || len(s) < 4 {
		return best
	}
	for _, c := range candidates {
		if strings.HasPrefix(c, s) {
			if best != "" {
				return "" // two or more: no guess
			}
			best = c
		}
	}
	return best
}

// singular strips an English plural ending from a key: "proxies" → "proxy",
// "addresses" → "address", "hosts" → "host"; "address" stays.
func singular(s string) string {
	switch {
	case strings.HasSuffix(s, "ies") && len(s) > 4:
		return strings.TrimSuffix(s, "ies") + "y"
	case strings.HasSuffix(s, "sses"), strings.HasSuffix(s, "xes"), strings.HasSuffix(s, "ches"), strings.HasSuffix(s, "shes"):
		return strings.TrimSuffix(s, "es")
	case strings.HasSuffix(s, "s") && !strings.HasSuffix(s, "ss"):
		return strings.TrimSuffix(s, "s")
	}
	return s
}

// editDistance is the Levenshtein distance between a and b (bytes).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// path is a key path into the document: string elements are mapping keys,
// int elements are list indexes. It prints as "apps[1].backend".
type path []any

func (p path) key(k string) path { return append(p[:len(p):len(p)], k) }
func (p path) index(i int) path  { return append(p[:len(p):len(p)], i) }

func (p path) String() string {
	var b strings.Builder
	for _, el := range p {
		switch el := el.(type) {
		case string:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(el)
		case int:
			fmt.Fprintf(&b, "[%d]", el)
		}
	}
	return b.String()
}

// resolve follows an alias node to what it names.
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// child returns the node at el (a key of a mapping or an index of a
// sequence) below n, or nil.
func child(n *yaml.Node, el any) *yaml.Node {
	n = resolve(n)
	if n == nil {
		return nil
	}
	switch el := el.(type) {
	case string:
		if n.Kind != yaml.MappingNode {
			return nil
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == el {
				return resolve(n.Content[i+1])
			}
		}
	case int:
		if n.Kind == yaml.SequenceNode && el >= 0 && el < len(n.Content) {
			return resolve(n.Content[el])
		}
	}
	return nil
}

// findKey finds the mapping key named key on line; the path returned is the
// mapping that holds it.
func findKey(n *yaml.Node, p path, line int, key string) (path, bool) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Line == line && k.Value == key {
				return p, true
			}
			if found, ok := findKey(v, p.key(k.Value), line, key); ok {
				return found, true
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			if found, ok := findKey(c, p.index(i), line, key); ok {
				return found, true
			}
		}
	}
	return nil, false
}

// tagKind is the kind of node a yaml.v3 short tag such as "!!map" names.
func tagKind(tag string) yaml.Kind {
	switch tag {
	case "!!map":
		return yaml.MappingNode
	case "!!seq":
		return yaml.SequenceNode
	}
	return yaml.ScalarNode
}

// findValue finds the first value node of kind on line (for scalars, one
// whose text starts with prefix), and its path.
func findValue(n *yaml.Node, p path, line int, kind yaml.Kind, prefix string) (path, *yaml.Node) {
	if n.Line == line && len(p) > 0 && n.Kind == kind && (kind != yaml.ScalarNode || strings.HasPrefix(n.Value, prefix)) {
		return p, n
	}
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if fp, fn := findValue(n.Content[i+1], p.key(n.Content[i].Value), line, kind, prefix); fn != nil {
				return fp, fn
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			if fp, fn := findValue(c, p.index(i), line, kind, prefix); fn != nil {
				return fp, fn
			}
		}
	}
	return nil, nil
}

// checker collects validation problems (step 3). Its root may be nil for
// configs built in code; problems then carry no file or line.
type checker struct {
	file string
	root *yaml.Node
	errs []error
}

// errorf records a problem at p. The line is that of the value at p, or of
// the deepest enclosing node that exists (a missing key inside apps[1] points
// at apps[1]); a missing top-level key has no line.
func (c *checker) errorf(p path, format string, args ...any) {
	line := 0
	if c.root != nil {
		n := c.root
		for _, el := range p {
			if n = child(n, el); n == nil {
				break
			}
			line = n.Line
		}
	}
	c.errs = append(c.errs, &Error{File: c.file, Line: line, Path: p.String(), Msg: fmt.Sprintf(format, args...)})
}

func (c *checker) err() error { return errors.Join(c.errs...) }

// CheckListenAddr checks a listen address given outside a config file,
// as the config checks public.addr; the error names flag (e.g. "--addr").
func CheckListenAddr(flag, addr string) error {
	c := &checker{}
	c.checkListenAddr(path{flag}, addr)
	return c.err()
}

// checkListenAddr checks an optional "host:port" listen address.
func (c *checker) checkListenAddr(p path, addr string) {
	if addr == "" {
		return
	}
	host, port, err := net.SplitHostPort(addr)
	switch {
	case err != nil:
		c.errorf(p, "must be host:port or :port, got %q", addr)
	case !validPort(port, false):
		c.errorf(p, "port %q must be a number from 0 to 65535", port)
	case host != "" && !validHost(host):
		c.errorf(p, "host %q in %q is neither an IP address nor a host name; write one of this machine's "+
			"addresses, or :%s for all of them", host, addr, port)
	}
}

// validHost reports whether h is an IP address (with an IPv6 zone) or
// could be a DNS name. A name whose last label is all digits is not: it is
// a mistyped IPv4 address such as 256.1.1.1 (no top-level domain is
// numeric).
func validHost(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	if !validHostname(strings.TrimSuffix(h, ".")) {
		return false
	}
	last := strings.TrimSuffix(h, ".")
	last = last[strings.LastIndexByte(last, '.')+1:]
	return strings.Trim(last, "0123456789") != ""
}

// checkDialAddr checks a required "host:port" address to connect to.
func (c *checker) checkDialAddr(p path, addr string) {
	if addr == "" {
		c.errorf(p, "required (host:port)")
		return
	}
	host, port, err := net.SplitHostPort(addr)
	switch {
	case err != nil:
		example := "gw.example.com"
		if validHost(addr) {
			example = addr
		}
		c.errorf(p, "must be host:port, got %q: e.g. %s (the port of the gateway's tunnel.addr, 8443 by default)",
			addr, net.JoinHostPort(example, "8443"))
	case host == "":
		c.errorf(p, "host missing in %q", addr)
	case !validPort(port, false) || port == "0":
		c.errorf(p, "port %q must be a number from 1 to 65535", port)
	case !validHost(host):
		c.errorf(p, "host %q in %q is neither an IP address nor a host name", host, addr)
	}
}

// checkTLSFiles checks that a cert/key pair is either complete or absent.
func (c *checker) checkTLSFiles(p path, t TLSFiles) {
	if (t.CertFile == "") != (t.KeyFile == "") {
		c.errorf(p, "cert_file and key_file must both be set or both be empty")
	}
}

// checkHTTPURL checks that s is an absolute http:// or https:// URL with a
// host name, a port (if any) from 1 to 65535, and without user info or
// fragment.
func (c *checker) checkHTTPURL(p path, s string) {
	u, err := url.Parse(s)
	switch {
	case s == "":
		c.errorf(p, "required: an http:// or https:// URL")
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		c.errorf(p, "must be an http:// or https:// URL, got %q", s)
	case u.Hostname() == "":
		c.errorf(p, "host missing in %q", s)
	case u.Port() != "" && (!validPort(u.Port(), false) || u.Port() == "0"):
		c.errorf(p, "port %q must be a number from 1 to 65535", u.Port())
	case u.User != nil:
		c.errorf(p, "must not contain a user name or password")
	case u.Fragment != "" || u.RawFragment != "":
		c.errorf(p, "must not contain a #fragment")
	}
}

// checkNonNegative rejects negative durations and counts.
func checkNonNegative[T time.Duration | int](c *checker, p path, v T) {
	if v < 0 {
		c.errorf(p, "must not be negative")
	}
}

// or returns v, or def when v is the zero value.
func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// validPort reports whether s is a decimal port 0..65535 (or "*" when star).
func validPort(s string, star bool) bool {
	if star && s == "*" {
		return true
	}
	n, err := strconv.Atoi(s)
	return err == nil && n >= 0 && n <= 65535 && s == strconv.Itoa(n)
}

// validHostname reports whether s is a DNS name: dot-separated labels of
// letters, digits, '-' and '_' (1–63 bytes each, no leading or trailing '-'),
// 253 bytes at most, no trailing dot.
func validHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			ch := label[i]
			if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_') {
				return false
			}
		}
	}
	return true
}

// normalizeHostPattern lowercases and checks an app host pattern: an exact
// host name, an IP address, or "*." followed by a host name (the wildcard
// stands for exactly one label). Ports are not allowed.
func normalizeHostPattern(s string) (string, error) {
	h := strings.ToLower(strings.TrimSpace(s))
	if h == "" {
		return "", errors.New("must not be empty")
	}
	if ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")); err == nil && ip.Zone() == "" {
		return ip.String(), nil
	}
	if strings.Contains(h, "://") {
		return "", fmt.Errorf("%q: write the host name alone, not a URL", s)
	}
	if strings.HasPrefix(h, "[") || strings.Contains(h, ":") {
		return "", fmt.Errorf("%q: must be a host name without a port (the request's port is ignored when matching)", s)
	}
	if strings.HasSuffix(h, ".") {
		return "", fmt.Errorf("%q: remove the trailing dot", s)
	}
	name := strings.TrimPrefix(h, "*.")
	if strings.Contains(name, "*") {
		return "", fmt.Errorf("%q: a wildcard may only be one whole leading label, as in *.example.com", s)
	}
	if !validHostname(name) {
		return "", fmt.Errorf("%q: not a valid host name", s)
	}
	return h, nil
}

// normalizeCIDRPattern normalises p, the lowercased CIDR pattern s (see
// normalizeBackendPattern).
func normalizeCIDRPattern(s, p string) (string, error) {
	if rest, ok := strings.CutPrefix(p, "["); ok {
		// [fd00::]/8:443 or [fd00::/8]:443: the brackets only set the
		// address apart from the port.
		inner, after, ok := strings.Cut(rest, "]")
		if !ok {
			return "", fmt.Errorf("%q: missing ']'", s)
		}
		p = inner + after
	}
	cidr, port := p, ""
	slash := strings.LastIndexByte(p, '/')
	if c := strings.IndexByte(p[slash:], ':'); c >= 0 {
		cidr, port = p[:slash+c], p[slash+c+1:]
		if !validPort(port, true) || port == "0" {
			return "", fmt.Errorf("%q: port must be a number from 1 to 65535 or *", s)
		}
	}
	prefix, err := netip.ParsePrefix(cidr)
	if err != nil {
		return "", fmt.Errorf("%q: not a valid CIDR prefix such as 10.0.0.0/8 (any port) or 10.0.0.0/8:443", s)
	}
	if port == "" || port == "*" {
		return prefix.Masked().String(), nil
	}
	return prefix.Masked().String() + ":" + port, nil
}

// normalizeBackendPattern lowercases and checks one entry of the agent's
// allow list (also used for backend_tls hosts). Accepted forms:
//
//	host:port        app.corp.example:443   exact host name
//	*.suffix:port    *.corp.example:443     host names under corp.example
//	IP:port          127.0.0.1:9000, [::1]:9000
//	CIDR             10.0.0.0/8, fd00::/8   any IP address in the prefix, any port
//	CIDR:port        10.0.0.0/8:443, fd00::/8:443, [fd00::]/8:443, [fd00::/8]:443
//
// The port may be "*" for any port. A CIDR is normalised to prefix or
// prefix:port (fd00::/8:443: the prefix length holds no ':', so a colon
// after the '/' starts the port), the forms the agent's allowlist parses.
func normalizeBackendPattern(s string) (string, error) {
	p := strings.ToLower(strings.TrimSpace(s))
	if p == "" {
		return "", errors.New("must not be empty")
	}
	if strings.Contains(p, "://") {
		return "", fmt.Errorf("%q: write host:port, not a URL", s)
	}
	if strings.Contains(p, "/") {
		return normalizeCIDRPattern(s, p)
	}
	host, port, err := net.SplitHostPort(p)
	if err != nil {
		if _, ipErr := netip.ParseAddr(p); ipErr == nil {
			return "", fmt.Errorf("%q: add a port (%s:PORT, or :* for any port) or write it as a CIDR prefix", s, p)
		}
		return "", fmt.Errorf("%q: must be host:port, *.domain:port, IP:port or a CIDR prefix", s)
	}
	if !validPort(port, true) || port == "0" {
		return "", fmt.Errorf("%q: port must be a number from 1 to 65535 or *", s)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			return "", fmt.Errorf("%q: IPv6 zones are not supported", s)
		}
		return net.JoinHostPort(ip.String(), port), nil
	}
	name := strings.TrimPrefix(host, "*.")
	if strings.Contains(name, "*") {
		return "", fmt.Errorf("%q: a wildcard may only be a leading \"*.\", as in *.corp.example:443", s)
	}
	if !validHostname(name) {
		return "", fmt.Errorf("%q: %q is not a valid host name", s, host)
	}
	return net.JoinHostPort(host, port), nil
}
