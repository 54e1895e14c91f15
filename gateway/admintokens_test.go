package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"maps"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/clock"
	"github.com/sallyport/sallyport/internal/store"
)

// TestTokenListState: GET /api/v1/tokens says of each token whether an
// agent may enroll with it now, by the gateway's clock: a token past its
// expiry is expired (also when uses are left, and also when used up), one
// with every use spent is used-up, config tokens and unlimited ones stay
// usable. Without it the list gave only dates and counts.
func TestTokenListState(t *testing.T) {
	ctx := context.Background()
	db, err := store.OpenMemory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	// The gateway's clock is a day ahead of the machine's: the state must
	// follow the gateway's.
	clk := clock.NewFake(time.Now().Add(24 * time.Hour).Truncate(time.Second))
	g, err := New(Config{TunnelTLS: &tls.Config{}, Store: db, AdminToken: testAdminToken, Clock: clk,
		Tokens: []Token{{Token: "spt_config", Group: "g"}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.closeOwnStore)
	srv := httptest.NewServer(g.AdminHandler())
	t.Cleanup(srv.Close)

	now := clk.Now()
	for _, tok := range []store.Token{
		{ID: "fresh", MaxUses: 1, Expires: now.Add(time.Hour)},
		{ID: "forever", MaxUses: 0, Used: 7},
		{ID: "spent", MaxUses: 2, Used: 2, Expires: now.Add(time.Hour)},
		{ID: "late", MaxUses: 5, Used: 1, Expires: now.Add(-time.Second)},
		{ID: "late-and-spent", MaxUses: 1, Used: 1, Expires: now.Add(-time.Second)},
		{ID: "at-expiry", MaxUses: 1, Expires: now}, // Enroll refuses it at its expiry
	} {
		tok.Hash, tok.Group, tok.Created = sha256.Sum256([]byte(tok.ID)), "g", now.Add(-time.Hour)
		if err := db.CreateToken(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	states := func() map[string]string {
		t.Helper()
		res, body := adminDo(t, srv.URL, "GET", "/api/v1/tokens", "")
		if res.StatusCode != 200 {
			t.Fatalf("GET /api/v1/tokens = %d %s", res.StatusCode, body)
		}
		var list []map[string]any
		if err := json.Unmarshal([]byte(body), &list); err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, x := range list {
			// The fields of earlier versions are all still there.
			for _, f := range []string{"id", "group", "uses", "used", "expires", "created", "source"} {
				if _, ok := x[f]; !ok {
					t.Errorf("token %v has no %q", x["id"], f)
				}
			}
			s, _ := x["state"].(string)
			out[x["id"].(string)] = s
		}
		return out
	}
	want := map[string]string{"config-0": "usable", "fresh": "usable", "forever": "usable", "spent": "used-up",
		"late": "expired", "late-and-spent": "expired", "at-expiry": "expired"}
	if got := states(); !maps.Equal(got, want) {
		t.Fatalf("states %v, want %v", got, want)
	}
	clk.Advance(time.Hour)
	want["fresh"], want["spent"] = "expired", "expired"
	if got := states(); !maps.Equal(got, want) {
		t.Fatalf("an hour later: states %v, want %v", got, want)
	}
	// The answer to POST has the state too.
	res, body := adminDo(t, srv.URL, "POST", "/api/v1/tokens", `{"group":"g"}`)
	var created map[string]any
	if res.StatusCode != 201 || json.Unmarshal([]byte(body), &created) != nil || created["state"] != "usable" {
		t.Fatalf("POST /api/v1/tokens = %d %s, want 201 with state usable", res.StatusCode, body)
	}
}
