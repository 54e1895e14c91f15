// Package credurl handles URLs from settings that may carry a user name and
// password (an HTTP proxy, a database DSN): a strict parser for HTTP
// CONNECT proxy URLs, and Redact, which keeps the password out of messages
// also for values that do not parse as URLs.
package credurl

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Redact returns s with the password of its userinfo replaced by "xxxxx",
// as url.URL.Redacted does. When s does not parse as a URL with the
// userinfo in its place (a '#', '/' or '?' in the password, or no
// scheme), everything between "://" (or the start) and the last '@' is
// taken as the userinfo and masked; only a plain user name (no '/', '#',
// '?', '%') before its first ':' is kept, so the value stays recognisable.
// A value without '@' is returned as it is.
func Redact(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	if u, err := url.Parse(s); err == nil && u.User != nil &&
		!strings.Contains(u.Opaque+u.Host+u.Path+u.RawQuery+u.Fragment, "@") {
		return u.Redacted()
	}
	prefix, user, rest := splitUserinfo(s)
	name, _, hasPass := strings.Cut(user, ":")
	switch {
	case strings.ContainsAny(name, "/#?%"):
		return prefix + "xxxxx" + rest
	case hasPass:
		return prefix + name + ":xxxxx" + rest
	default:
		return s // a user name and no password
	}
}

// splitUserinfo cuts s at the end of its "scheme://" (or at the start) and
// at its last '@' (kept in rest). s must contain '@'.
func splitUserinfo(s string) (prefix, user, rest string) {
	start := 0
	if i := strings.Index(s, "://"); i >= 0 {
		start = i + len("://")
	}
	at := strings.LastIndexByte(s, '@')
	if at < start { // the '@' is in the scheme: no userinfo
		return s, "", ""
	}
	return s[:start], s[start:at], s[at:]
}

// ParseProxy parses the URL of an HTTP CONNECT proxy:
// http[s]://[user[:password]@]host[:port][/]. Its errors show the value
// without the password (see Redact) and say what to change; a '#', '/',
// '?' or '%' in an unencoded password, which would otherwise move the host
// or drop the proxy, is an error.
func ParseProxy(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err == nil && validProxy(u) {
		return u, nil
	}
	msg := fmt.Sprintf("must be an http:// or https:// URL of an HTTP CONNECT proxy, got %q", Redact(s))
	if hint := proxyHint(s); hint != "" {
		msg += "; " + hint
	}
	return nil, errors.New(msg)
}

func validProxy(u *url.URL) bool {
	return (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.Opaque == "" &&
		(u.Path == "" || u.Path == "/") && u.RawQuery == "" && !u.ForceQuery && u.Fragment == ""
}

// proxyHint says what is wrong with s, an invalid proxy URL, without
// showing its password.
func proxyHint(s string) string {
	if !strings.Contains(s, "://") {
		return "write it as http://HOST:PORT (or http://USER:PASSWORD@HOST:PORT)"
	}
	masked := s
	if strings.Contains(s, "@") {
		prefix, user, rest := splitUserinfo(s)
		if user != "" {
			// The same URL with a harmless user and password: if that one
			// is fine, the userinfo is what breaks s.
			masked = prefix + "user:password" + rest
			if u, err := url.Parse(masked); err == nil && validProxy(u) {
				return "percent-encode the user name and password: every character but letters, digits " +
					"and - . _ ~ (e.g. %23 for #, %2F for /, %40 for @, %3A for :, %25 for %, %5C for \\, %20 for a space)"
			}
		}
	}
	u, err := url.Parse(masked)
	var ue *url.Error
	switch {
	case errors.As(err, &ue):
		return ue.Err.Error()
	case err != nil:
		return err.Error()
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Sprintf("%s:// proxies are not supported", u.Scheme)
	case u.Host == "":
		return "it names no host"
	default:
		return "remove the path, query or fragment after the host and port"
	}
}
