package credurl

import (
	"strings"
	"testing"
)

// TestRedact: the password never survives, whether or not the value parses
// as a URL, and the rest of the value stays recognisable.
func TestRedact(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"http://proxy.corp:3128", "http://proxy.corp:3128"},
		{"http://user@proxy.corp:3128", "http://user@proxy.corp:3128"},
		{"http://user:s3cr3t@proxy.corp:3128", "http://user:xxxxx@proxy.corp:3128"},
		{"http://user:pa#s3cr3t@proxy.corp:3128", "http://user:xxxxx@proxy.corp:3128"},
		{"http://user:pa/s3cr3t@proxy.corp:3128", "http://user:xxxxx@proxy.corp:3128"},
		{"http://user:pa?s3cr3t@proxy.corp:3128", "http://user:xxxxx@proxy.corp:3128"},
		{"http://user:s3cr3t%zz@proxy.corp:3128", "http://user:xxxxx@proxy.corp:3128"},
		{"http://user:p@s3cr3t@proxy.corp:3128", "http://user:xxxxx@proxy.corp:3128"},
		{"http://us#s3cr3t@proxy.corp:3128", "http://xxxxx@proxy.corp:3128"},
		{"user:s3cr3t@proxy.corp:3128", "user:xxxxx@proxy.corp:3128"},
		{"http://user:s3cr3t@proxy corp:3128", "http://user:xxxxx@proxy corp:3128"},
		{"postgress://sally:s3cr3t@db.internal:5432/sallyport", "postgress://sally:xxxxx@db.internal:5432/sallyport"},
		{"postgresql:/sally:s3cr3t@db.internal/sallyport", "postgresql:xxxxx@db.internal/sallyport"},
		{"mysql://gw@db/gw", "mysql://gw@db/gw"},
	} {
		if got := Redact(c.in); got != c.want {
			t.Errorf("Redact(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestParseProxy: well-formed proxy URLs parse; malformed ones are errors
// that say what to change and never show the password.
func TestParseProxy(t *testing.T) {
	for _, s := range []string{"http://proxy:3128", "https://proxy.corp", "http://u:p%23w@proxy:3128/", "http://[::1]:3128",
		"http://CORP%5Calice:s3%20cr3t@proxy:3128"} {
		if _, err := ParseProxy(s); err != nil {
			t.Errorf("ParseProxy(%q): %v", s, err)
		}
	}
	for _, c := range []struct{ in, want string }{
		{"http://user:pa#s3cr3t@proxy.corp:3128", `"http://user:xxxxx@proxy.corp:3128"; percent-encode`},
		{"http://user:pa/s3cr3t@proxy.corp:3128", `"http://user:xxxxx@proxy.corp:3128"; percent-encode`},
		{"http://user:s3cr3t%zz@proxy.corp:3128", `"http://user:xxxxx@proxy.corp:3128"; percent-encode`},
		{"http://us#s3cr3t@proxy.corp:3128", `"http://xxxxx@proxy.corp:3128"; percent-encode`},
		// A Windows domain user and a space: the hint names their codes
		// (it used to list only # / ? @ : %, which these do not contain).
		{`http://CORP\alice:s3cr3t@proxy.corp:3128`, `%5C for \`},
		{"http://alice:s3 cr3t@proxy.corp:3128", "%20 for a space"},
		{"user:s3cr3t@proxy.corp:3128", `"user:xxxxx@proxy.corp:3128"; write it as http://HOST:PORT`},
		{"http://user:s3cr3t@proxy corp:3128", `"http://user:xxxxx@proxy corp:3128"; invalid character " " in host name`},
		{"socks5://u:s3cr3t@p:1080", `"socks5://u:xxxxx@p:1080"; socks5:// proxies are not supported`},
		{"http://", `"http://"; it names no host`},
		{"http://proxy:3128/pac?x", "remove the path"},
	} {
		_, err := ParseProxy(c.in)
		if err == nil {
			t.Errorf("ParseProxy(%q) accepted it", c.in)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, c.want) || strings.Contains(msg, "s3cr3t") ||
			!strings.HasPrefix(msg, "must be an http:// or https:// URL of an HTTP CONNECT proxy") {
			t.Errorf("ParseProxy(%q) = %q, want it to contain %q and no password", c.in, msg, c.want)
		}
	}
}
