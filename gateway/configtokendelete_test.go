package gateway

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/internal/store"
)

// TestDeleteConfigToken: deleting a token that the list shows as config-N
// (an entry of the config's tunnel.tokens) answers 409 with where the token
// comes from and how to remove it; ids past the config's tokens stay 404.
// It used to answer 404 "no token with id", for a token the list had just
// shown.
func TestDeleteConfigToken(t *testing.T) {
	db, err := store.OpenMemory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	g, err := New(Config{TunnelTLS: &tls.Config{}, Store: db, AdminToken: testAdminToken,
		Tokens: []Token{{Token: "spt_config_a", Group: "g"}, {Token: "spt_config_b", Group: "g"}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.closeOwnStore)
	srv := httptest.NewServer(g.AdminHandler())
	t.Cleanup(srv.Close)
	for _, tc := range []struct {
		id     string
		code   int
		errHas string
	}{
		{"config-1", 409, "entry 1 of tunnel.tokens in the gateway config"},
		{"config-0", 409, "restart the gateway"},
		{"config-2", 404, `no token with id "config-2"`},
		{"config-01", 404, "no token with id"},
	} {
		res, body := adminDo(t, srv.URL, "DELETE", "/api/v1/tokens/"+tc.id, "")
		var e APIError
		if res.StatusCode != tc.code || json.Unmarshal([]byte(body), &e) != nil || !strings.Contains(e.Error, tc.errHas) {
			t.Errorf("DELETE %s = %d %s, want %d mentioning %q", tc.id, res.StatusCode, body, tc.code, tc.errHas)
		}
	}
}
