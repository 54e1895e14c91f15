package preauth

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"

	"github.com/sallyport/sallyport/internal/assertion"
)

func TestSignedOutPrunesEndedSessions(t *testing.T) {
	var l signedOut
	for i := range signedOutMin {
		l.add(fmt.Sprint("old", i), 100, 50) // their sessions end at 100
	}
	// Full at 50: nothing has ended, so nothing goes, and the next pruning
	// waits for twice as many entries.
	l.add("live", 300, 50)
	if len(l.ids) != signedOutMin+1 || !l.has("old0") || l.prune != 2*signedOutMin {
		t.Fatalf("at 50: %d entries, old0 %v, next pruning at %d", len(l.ids), l.has("old0"), l.prune)
	}
	for i := range signedOutMin - 1 {
		l.add(fmt.Sprint("mid", i), 300, 200)
	}
	if len(l.ids) != 2*signedOutMin || !l.has("old0") {
		t.Fatalf("pruned early: %d entries", len(l.ids))
	}
	// Past 100 and full again: the ended sessions go.
	l.add("new", 400, 200)
	if len(l.ids) != signedOutMin+1 || !l.has("live") || !l.has("new") || !l.has("mid0") || l.has("old0") {
		t.Fatalf("after pruning: %d entries, live %v new %v old0 %v", len(l.ids), l.has("live"), l.has("new"), l.has("old0"))
	}
}

// TestRevokeClientAuth: a confidential client authenticates with HTTP
// Basic over form-encoded credentials (RFC 6749 §2.3.1), a public client
// names itself in the form; both send the token with its type hint.
func TestRevokeClientAuth(t *testing.T) {
	type call struct {
		form       url.Values
		id, secret string
		basic      bool
	}
	var (
		mu    sync.Mutex
		calls []call
		noEnd bool
	)
	var ts *httptest.Server
	ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			meta := map[string]any{"issuer": ts.URL, "authorization_endpoint": ts.URL + "/a",
				"token_endpoint": ts.URL + "/t", "jwks_uri": ts.URL + "/k"}
			mu.Lock()
			if !noEnd {
				meta["revocation_endpoint"] = ts.URL + "/revoke"
			}
			mu.Unlock()
			_ = json.NewEncoder(w).Encode(meta)
		case "/revoke":
			_ = r.ParseForm()
			id, secret, basic := r.BasicAuth()
			mu.Lock()
			calls = append(calls, call{r.PostForm, id, secret, basic})
			mu.Unlock()
		default:
			http.NotFound(w, r)
		}
	}))
	defer ts.Close()
	keys, err := assertion.NewKeySet(assertion.KeySetConfig{})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := New(Config{
		Providers: []ProviderConfig{
			{Name: "conf", Issuer: ts.URL, ClientID: "app:1", ClientSecret: "p&q"},
			{Name: "pub", Issuer: ts.URL, ClientID: "spa"},
			{Name: "none", Issuer: ts.URL, ClientID: "x"},
		},
		CookieKey: make([]byte, KeySize), Keys: keys,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"conf", "pub"} {
		if done, err := svc.providers[name].revoke(t.Context(), "rt-"+name); !done || err != nil {
			t.Fatalf("%s: revoked %v, %v", name, done, err)
		}
	}
	if len(calls) != 2 {
		t.Fatalf("%d calls", len(calls))
	}
	c := calls[0]
	if !c.basic || c.id != "app%3A1" || c.secret != "p%26q" || c.form.Get("client_id") != "" ||
		c.form.Get("token") != "rt-conf" || c.form.Get("token_type_hint") != "refresh_token" {
		t.Errorf("confidential client: %+v", c)
	}
	c = calls[1]
	if c.basic || c.form.Get("client_id") != "spa" || c.form.Get("token") != "rt-pub" {
		t.Errorf("public client: %+v", c)
	}
	// A provider that advertises no revocation endpoint: nothing to do.
	mu.Lock()
	noEnd = true
	mu.Unlock()
	if done, err := svc.providers["none"].revoke(t.Context(), "rt"); done || err != nil {
		t.Fatalf("no endpoint: revoked %v, %v", done, err)
	}
	if len(calls) != 2 {
		t.Fatalf("%d calls", len(calls))
	}
}
