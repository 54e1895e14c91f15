package config

import (
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestErrorFormat(t *testing.T) {
	tests := []struct {
		e    Error
		want string
	}{
		{Error{File: "g.yaml", Line: 7, Path: "apps[0].name", Msg: "required"}, "g.yaml:7: apps[0].name: required"},
		{Error{File: "g.yaml", Line: 7, Msg: `unknown key "x"`}, `g.yaml:7: unknown key "x"`},
		{Error{File: "g.yaml", Path: "token", Msg: "required"}, "g.yaml: token: required"},
		{Error{File: "g.yaml", Msg: "file is empty"}, "g.yaml: file is empty"},
		{Error{Path: "token", Msg: "required"}, "token: required"},
		{Error{Msg: "bad"}, "bad"},
	}
	for _, tt := range tests {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("%+v: got %q, want %q", tt.e, got, tt.want)
		}
	}
}

func TestPathString(t *testing.T) {
	p := path{"apps"}.index(1).key("policy").key("emails").index(0)
	if got := p.String(); got != "apps[1].policy.emails[0]" {
		t.Errorf("got %q", got)
	}
	// key and index must not share backing arrays between siblings.
	base := make(path, 1, 10)
	base[0] = "apps"
	a, b := base.index(0), base.index(1)
	if a.String() != "apps[0]" || b.String() != "apps[1]" {
		t.Errorf("siblings alias: %q %q", a, b)
	}
	if got := (path{}).String(); got != "" {
		t.Errorf("empty path = %q", got)
	}
}

func TestHostPatterns(t *testing.T) {
	tests := []normalizeCase{
		{"hello.example.com", "hello.example.com", ""},
		{"Hello.Example.COM", "hello.example.com", ""},
		{" spaced.example ", "spaced.example", ""},
		{"*.apps.example.com", "*.apps.example.com", ""},
		{"*.COM", "*.com", ""},
		{"localhost", "localhost", ""},
		{"under_score.example", "under_score.example", ""},
		{"192.0.2.1", "192.0.2.1", ""},
		{"2001:DB8::1", "2001:db8::1", ""},
		{"[2001:db8::1]", "2001:db8::1", ""},
		{"", "", "must not be empty"},
		{"*", "", "wildcard"},
		{"*.", "", "trailing dot"},
		{"a.*.example.com", "", "wildcard"},
		{"*.*.example.com", "", "wildcard"},
		{"*example.com", "", "wildcard"},
		{"example.com:443", "", "without a port"},
		{"[2001:db8::1]:443", "", "without a port"},
		{"example.com.", "", "trailing dot"},
		{"-bad.example", "", "not a valid host name"},
		{"bad-.example", "", "not a valid host name"},
		{"a..b", "", "not a valid host name"},
		{"ex ample.com", "", "not a valid host name"},
		{"exämple.com", "", "not a valid host name"},
		{strings.Repeat("a", 64) + ".com", "", "not a valid host name"},
		{strings.Repeat("a.", 127) + "com", "", "not a valid host name"},
		{"http://example.com", "", "not a URL"},
		{"example.com/path", "", "not a valid host name"},
	}
	checkNormalize(t, normalizeHostPattern, tests)
}

func TestBackendPatterns(t *testing.T) {
	tests := []normalizeCase{
		{"127.0.0.1:9000", "127.0.0.1:9000", ""},
		{"App.Corp.Example:443", "app.corp.example:443", ""},
		{"*.corp.example:443", "*.corp.example:443", ""},
		{"*.corp.example:*", "*.corp.example:*", ""},
		{"app.corp:*", "app.corp:*", ""},
		{"10.0.0.0/8", "10.0.0.0/8", ""},
		{"10.1.2.3/8", "10.0.0.0/8", ""},
		{"192.168.1.7/32", "192.168.1.7/32", ""},
		{"FD00::/8", "fd00::/8", ""},
		{"[::1]:9000", "[::1]:9000", ""},
		{"[2001:DB8::1]:*", "[2001:db8::1]:*", ""},
		{"localhost:8080", "localhost:8080", ""},
		{"", "", "must not be empty"},
		{"app.corp", "", "must be host:port"},
		{"10.0.0.1", "", "add a port"},
		{"::1", "", "add a port"},
		{"10.0.0.0/33", "", "not a valid CIDR"},
		{"app.corp/8", "", "not a valid CIDR"},
		{"10.0.0.0/8:443", "10.0.0.0/8:443", ""},
		{"10.0.0.0/8:*", "10.0.0.0/8", ""},
		{"[2001:DB8::]/32:443", "2001:db8::/32:443", ""},
		{"[fd00::/8]:443", "fd00::/8:443", ""},
		{"10.0.0.0/8:0", "", "port must be"},
		{"app.corp:0", "", "port must be"},
		{"app.corp:65536", "", "port must be"},
		{"app.corp:https", "", "port must be"},
		{"app.corp:08", "", "port must be"},
		{"app.corp:", "", "port must be"},
		{":443", "", "not a valid host name"},
		{"*:443", "", "wildcard"},
		{"a.*.corp:443", "", "wildcard"},
		{"[fe80::1%eth0]:80", "", "zones"},
		{"bad_host!:80", "", "not a valid host name"},
		{"http://app.corp:80", "", "not a URL"},
	}
	checkNormalize(t, normalizeBackendPattern, tests)
}

func TestClosest(t *testing.T) {
	keys := []string{"name", "hosts", "path_prefix", "backend", "group", "timeout"}
	for in, want := range map[string]string{
		"bakend":     "backend",
		"host":       "hosts",
		"pathprefix": "path_prefix",
		"groups":     "group",
		"timeuot":    "timeout",
		"zzzzz":      "",
		"":           "",
	} {
		if got := closest(in, keys); got != want {
			t.Errorf("closest(%q) = %q, want %q", in, got, want)
		}
	}
	if d := editDistance("kitten", "sitting"); d != 3 {
		t.Errorf("editDistance = %d, want 3", d)
	}
}

// normalizeCase is an input of a normalize function, and its result: want,
// or an error containing err.
type normalizeCase struct {
	in, want, err string // err: substring of the error; "" → valid
}

// checkNormalize checks normalize's result for each of tests.
func checkNormalize(t *testing.T, normalize func(string) (string, error), tests []normalizeCase) {
	t.Helper()
	for _, tt := range tests {
		got, err := normalize(tt.in)
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("%q: unexpected error %v", tt.in, err)
		case tt.err == "" && got != tt.want:
			t.Errorf("%q: got %q, want %q", tt.in, got, tt.want)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%q: got (%q, %v), want error containing %q", tt.in, got, err, tt.err)
		}
	}
}

// wantRefused checks that a config parse failed with an error containing
// each of want, and returned no config (c) with it.
func wantRefused[C any](t *testing.T, c *C, err error, want []string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; parsed %+v", c)
	}
	if c != nil {
		t.Errorf("config returned together with an error")
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not contain %q; error:\n%v", w, err)
		}
	}
}
