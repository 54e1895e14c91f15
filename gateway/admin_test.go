package gateway

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/internal/selfsigned"
	"github.com/sallyport/sallyport/internal/store"
)

const testAdminToken = "test-admin-token"

// newAdminServer serves a gateway's admin API (not started: no listeners)
// on a loopback httptest server, and returns its URL and the store.
func newAdminServer(t *testing.T) (string, *store.DB) {
	t.Helper()
	db, err := store.OpenMemory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	cert, _, _, err := selfsigned.LoadOrCreate(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(Config{
		PublicAddr: "127.0.0.1:0", TunnelAddr: "127.0.0.1:0",
		TunnelTLS: &tls.Config{Certificates: []tls.Certificate{cert}}, Store: db, AdminToken: testAdminToken,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.AdminHandler())
	t.Cleanup(srv.Close)
	return srv.URL, db
}

func adminDo(t *testing.T, base, method, path, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testAdminToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, string(b)
}

// TestAdminAPIErrorsAreJSON: every error answer of an authenticated API
// call is {"error": …} as documented, also the mux's own 404 and 405, and
// request bodies are exactly one JSON object of at most 64 KiB.
func TestAdminAPIErrorsAreJSON(t *testing.T) {
	base, db := newAdminServer(t)
	for _, tc := range []struct {
		name, method, path, body string
		code                     int
		allow, errHas            string
	}{
		{"unknown route", "GET", "/api/v1/nope", "", 404, "", "/api/v1/nope"},
		{"unknown version", "GET", "/api/v2/tokens", "", 404, "", "/api/v2/tokens"},
		{"wrong method", "PUT", "/api/v1/tokens", "", 405, "GET, HEAD, POST", "PUT"},
		{"wrong method on revoke", "GET", "/api/v1/connectors/x/revoke", "", 405, "POST", "GET"},
		{"trailing garbage", "POST", "/api/v1/tokens", `{"group":"default"} THIS IS NOT JSON`, 400, "", "after the JSON object"},
		{"second object", "POST", "/api/v1/tokens", `{"group":"default"}{"group":"default"}`, 400, "", "after the JSON object"},
		{"stray brace", "POST", "/api/v1/tokens", `{"group":"default"}}`, 400, "", "after the JSON object"},
		{"bad group", "POST", "/api/v1/tokens", `{"group":"team a"}`, 400, "", `group "team a": want 1-64 letters`},
		{"not JSON", "POST", "/api/v1/tokens", `group=default`, 400, "", "bad JSON body"},
		// An empty body was "bad JSON body: EOF"; a field of the wrong type
		// named the Go struct and Go type ("Go struct field
		// APITokenRequest.uses of type int"); a body cut short was
		// "unexpected EOF". Each now says what to send.
		{"empty body", "POST", "/api/v1/tokens", "", 400, "", `the request body is empty; send one JSON object`},
		{"blank body", "POST", "/api/v1/tokens", " \n", 400, "", `the request body is empty; send one JSON object`},
		{"uses as a string", "POST", "/api/v1/tokens", `{"group":"default","uses":"3"}`, 400, "", `field "uses": want a whole number within range, not a JSON string`},
		{"uses a fraction", "POST", "/api/v1/tokens", `{"group":"default","uses":1.5}`, 400, "", `field "uses": want a whole number within range, not a JSON number 1.5`},
		{"ttl in seconds", "POST", "/api/v1/tokens", `{"group":"default","ttl":3600}`, 400, "", `field "ttl": want a string (in quotes, e.g. "1h"), not a JSON number`},
		{"cut short", "POST", "/api/v1/tokens", `{"group":"default"`, 400, "", "the JSON object ends early"},
		{"100 KB body", "POST", "/api/v1/tokens", `{"group":"` + strings.Repeat("a", 100000) + `"}`, 413, "", "64 KiB"},
		// Routes with path values still get them through the error wrapper.
		{"unknown connector", "POST", "/api/v1/connectors/c-nosuch/revoke", "", 404, "", `"c-nosuch"`},
		{"unknown token", "DELETE", "/api/v1/tokens/t-nosuch", "", 404, "", "t-nosuch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, body := adminDo(t, base, tc.method, tc.path, tc.body)
			if res.StatusCode != tc.code {
				t.Fatalf("%s %s = %d %q, want %d", tc.method, tc.path, res.StatusCode, body, tc.code)
			}
			if ct := res.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			if got := res.Header.Get("Allow"); got != tc.allow {
				t.Errorf("Allow = %q, want %q", got, tc.allow)
			}
			var e APIError
			if err := json.Unmarshal([]byte(body), &e); err != nil || !strings.Contains(e.Error, tc.errHas) {
				t.Errorf("body %q (%v): want {\"error\": …} mentioning %q", body, err, tc.errHas)
			}
		})
	}
	toks, err := db.Tokens(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(toks) != 0 {
		t.Fatalf("refused requests created %d tokens", len(toks))
	}
	// Trailing white space is no extra data.
	if res, body := adminDo(t, base, "POST", "/api/v1/tokens", "{\"group\":\"default\"}\n \n"); res.StatusCode != 201 {
		t.Fatalf("POST with a trailing newline = %d %s, want 201", res.StatusCode, body)
	}
}

// TestAdminBearerSchemeCaseInsensitive: the authentication scheme is
// case-insensitive (RFC 9110 section 11.1), so "bearer TOKEN" and
// "BEARER  TOKEN" are the admin token too; another scheme, a missing or
// wrong token still get 401.
func TestAdminBearerSchemeCaseInsensitive(t *testing.T) {
	base, _ := newAdminServer(t)
	for _, tc := range []struct {
		auth string
		want int
	}{
		{"Bearer " + testAdminToken, http.StatusOK},
		{"bearer " + testAdminToken, http.StatusOK},
		{"BEARER  " + testAdminToken, http.StatusOK},
		{"Bearer", http.StatusUnauthorized},
		{"Bearer ", http.StatusUnauthorized},
		{"Bearerx " + testAdminToken, http.StatusUnauthorized},
		{"Basic " + testAdminToken, http.StatusUnauthorized},
		{"bearer wrong-" + testAdminToken, http.StatusUnauthorized},
		{testAdminToken, http.StatusUnauthorized},
	} {
		req, err := http.NewRequest(http.MethodGet, base+"/api/v1/tokens", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", tc.auth)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != tc.want {
			t.Errorf("Authorization %q: status %d, want %d", strings.Replace(tc.auth, testAdminToken, "<token>", 1), res.StatusCode, tc.want)
		}
	}
}
