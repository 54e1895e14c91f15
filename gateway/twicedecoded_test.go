package gateway

import (
	"net/http"
	"testing"
)

// TestTwiceDecodedLettersCannotChangeApp: a backend that decodes the path
// a second time (the kind whose "%252e%252e" normalisePath refuses, and
// whose "%252F" appendSlashesDecoded reads) reads a client's "/%2561dmin/x" as
// "/admin/x": routed by "/" to the app without sign-in ("%61dmin" after
// one decoding), it skipped the sign-in of the app at /admin. Paths whose
// second decoding stays in their app are routed.
func TestTwiceDecodedLettersCannotChangeApp(t *testing.T) {
	g := admitGateway(t,
		Route{App: "site", PathPrefix: "/"},
		Route{App: "admin", PathPrefix: "/admin"},
		Route{App: "aerzte", PathPrefix: "/ärzte"},
	)
	admit := func(raw string) (bool, string, int) { return admitRaw(g, raw) }
	for _, bad := range []string{
		"/%2561dmin/x", "/%2561%2564%256d%2569%256e", "/adm%2569n", "/%2541DMIN/x", "/%2561dmin;x/y",
		"/%25C3%25A4rzte/x",
	} {
		if ok, app, code := admit(bad); ok || code != http.StatusBadRequest {
			t.Errorf("%s: admitted to %s (answer %d); a backend that decodes twice reads another app's path", bad, app, code)
		}
	}
	for raw, want := range map[string]string{
		"/files/100%25": "site", "/a%2520b": "site", "/admin/%2561": "admin", "/%25zz/admin": "site",
		"/x/%2561dmin": "site", "/%2561dminx": "site",
	} {
		if ok, app, code := admit(raw); !ok || app != want {
			t.Errorf("%s: admitted %v to %s (answer %d), want %s", raw, ok, app, code, want)
		}
	}
}
