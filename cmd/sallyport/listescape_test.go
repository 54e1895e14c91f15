//go:build !agentonly

package main

import (
	"context"
	"crypto/tls"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/store"
)

// TestAdminListEscapesNames: `connector list` and `connector revoke`
// print names, versions and platforms with control and format characters
// escaped. Gateways refuse such names at enrollment only since they check
// them: a store kept from an older gateway still holds what its agents
// sent, and the CLI printed it raw, so an escape sequence retitled or
// cleared the administrator's terminal, a line break forged a row, and a
// right-to-left override showed a name reordered.
func TestAdminListEscapesNames(t *testing.T) {
	ctx := context.Background()
	db, err := store.OpenMemory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	const adminTok = "review11-admin-Secret-91c4"
	g, err := gateway.New(gateway.Config{TunnelTLS: &tls.Config{}, Store: db, AdminToken: adminTok})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.AdminHandler())
	t.Cleanup(srv.Close)
	now := time.Now()
	// As an older gateway recorded them.
	if err := db.AddConnector(ctx, store.Connector{ID: "c-old", Name: "host\x1b]0;owned\x07\x1b[2J",
		Group: "g", Version: "1.0\nc-forged  x", Platform: "web\u202egnp.exe", Enrolled: now,
		CertSerial: "1", CertExpires: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(tokFile, []byte(adminTok), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SALLYPORT_ADMIN_TOKEN", "")
	admin := []string{"--admin-url", srv.URL, "--admin-token-file", tokFile}
	list, err := runCLI(t, append([]string{"connector", "list"}, admin...)...)
	if err != nil {
		t.Fatal(err)
	}
	revoke, err := runCLI(t, append([]string{"connector", "revoke", "c-old"}, admin...)...)
	if err != nil {
		t.Fatal(err)
	}
	for name, out := range map[string]string{"list": list, "revoke": revoke} {
		if strings.ContainsAny(out, "\x1b\x07\u202e") {
			t.Errorf("connector %s printed control or format characters raw: %q", name, out)
		}
		if !strings.Contains(out, `host\x1b]0;owned\a\x1b[2J`) {
			t.Errorf("connector %s: %q, want the name with its escapes shown", name, out)
		}
	}
	if lines := strings.Split(strings.TrimSpace(list), "\n"); len(lines) != 2 ||
		!strings.Contains(list, `1.0\nc-forged`) || !strings.Contains(list, `web\u202egnp.exe`) {
		t.Errorf("connector list: %d lines %q, want the header and one row with escapes", len(lines), list)
	}
}
