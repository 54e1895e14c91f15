package assertion

import (
	"net/http"
	"testing"
)

// TestHeaderSpellings: a client's identity header in a spelling that some
// server folds onto X-Sallyport-User (lighttpd and Apache httpd before 2.4
// turn every byte but letters and digits into "_" for CGI and FastCGI;
// PHP, WSGI and Rack fold "-" and "_") is recognised and stripped. The old
// check knew only case and "_": X.Sallyport.User, X~Sallyport~Groups and
// X-Sallyport.User reached apps.
func TestHeaderSpellings(t *testing.T) {
	for name, want := range map[string]bool{
		"X-Sallyport-User": true, "x_sallyport_user": true, "X.Sallyport.User": true, "X~Sallyport~Groups": true,
		"X+Sallyport+Email": true, "X-Sallyport.Assertion": true, "x!sallyport'anything": true, "X.SALLYPORT_": true,
		"X-Sallyport": false, "X-Sallyportx-User": false, "Xx-Sallyport-User": false, "X-Other": false, "": false,
	} {
		if got := IsHeader(name); got != want {
			t.Errorf("IsHeader(%q) = %v, want %v", name, got, want)
		}
	}
	h := http.Header{"X.sallyport.user": {"a"}, "X|sallyport|email": {"b"}, "X-Kept": {"c"}, "X-Sallyport-Groups": {"d"}}
	StripHeaders(h)
	if len(h) != 1 || h.Get("X-Kept") != "c" {
		t.Errorf("after StripHeaders: %v", h)
	}
	for in, want := range map[string]string{
		"X-Forwarded-For": "X-Forwarded-For", "X_Forwarded.For": "X-Forwarded-For", "x~real~ip": "x-real-ip", "a1-B2": "a1-B2",
	} {
		if got := FoldName(in); got != want {
			t.Errorf("FoldName(%q) = %q, want %q", in, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = FoldName("X-Forwarded-For"); _ = IsHeader("X.Sallyport.User") }); n != 0 {
		t.Errorf("%v allocations for names without anything to fold", n)
	}
}
