package gateway

import (
	"net/http"
	"testing"
)

// TestCodePageCannotChangeApp: a path that is not UTF-8 is read by
// HTTP.sys (IIS, by default: EnableNonUtf8) in the system's ANSI or DBCS
// code page, so "/%E4rzte/x" is "/ärzte/x" on a Western European Windows
// and "/%C4RZTE/x" is "/ÄRZTE/x", which IIS serves as "/ärzte/x": routed
// by "/" to the app without sign-in, they skipped the sign-in of the app
// at /ärzte (foldedPrefix reads only UTF-8 letters). Not UTF-8 paths that
// cannot spell another app's prefix in any code page stay routed.
func TestCodePageCannotChangeApp(t *testing.T) {
	g := admitGateway(t,
		Route{App: "site", PathPrefix: "/"},
		Route{App: "aerzte", PathPrefix: "/ärzte"},
		Route{App: "nihon", PathPrefix: "/日本/x"},
		Route{App: "admin", PathPrefix: "/admin"},
	)
	admit := func(raw string) (bool, string, int) { return admitRaw(g, raw) }
	for _, bad := range []string{
		"/%E4rzte/x", "/%C4RZTE", "/%C4rzte/x;p", "/%E4rzte%2Fx",
		"/%93%FA%96%7B/X/y", // Shift-JIS 日本, then X in another case
		"/%E4%FF/x/z",       // two single bytes, or one double-byte letter
	} {
		if ok, app, code := admit(bad); ok || code != http.StatusBadRequest {
			t.Errorf("%s: admitted to %s (answer %d); a backend reading it in a legacy code page may serve another app",
				bad, app, code)
		}
	}
	for raw, want := range map[string]string{
		"/%E4pfel/x": "site", "/%E4rzt": "site", "/%E4rztex/y": "site", "/x/%E4rzte": "site", "/%FF": "site",
		"/%C3%A4rzte/x": "aerzte", "/admin/%E4": "admin", "/%E4%FF/y": "site",
	} {
		if ok, app, code := admit(raw); !ok || app != want {
			t.Errorf("%s: admitted %v to %s (answer %d), want %s", raw, ok, app, code, want)
		}
	}
}
