package gateway

import "testing"

// TestPathNormDoubleEncodedDotSegments: a segment that a server decoding
// the path a second time (IIS with double escaping, some frameworks'
// routers) reads as a dot segment is refused, as "..%2F" is: behind a
// public path it reached such a backend as "/public/../admin". The old
// normalisePath accepted every one of these and forwarded them as they
// came ("/public/%252e%252e/admin").
func TestPathNormDoubleEncodedDotSegments(t *testing.T) {
	for _, bad := range []string{
		"/public/%252e%252e/admin", "/public/%252E%252e/admin", "/public/.%252e/admin", "/public/%252e/admin",
		"/public/..%255cadmin", "/public/..%255Cadmin", "/public/%252e%252e%252fadmin", "/public/x%252F%252e%252e",
		"/public/%252e%252e;x/admin", "/public/..%253bx/admin", "/public/%252e%252e%253b/admin",
	} {
		if got, err := normalisePath(bad); err == nil {
			t.Errorf("%q: accepted as %+v", bad, got)
		}
	}
	// What decodes twice to no dot segment stays.
	for in, match := range map[string]string{
		"/a/%252e%252ex": "/a/%2e%2ex", "/a/100%25": "/a/100%", "/a/%25zz": "/a/%zz", "/a/x.%252e": "/a/x.%2e",
		"/a/%2Fb%2e": "/a/%2Fb.",
	} {
		if got, err := normalisePath(in); err != nil || got.Match != match {
			t.Errorf("%q: got %+v %v, want match %q", in, got, err, match)
		}
	}
}
