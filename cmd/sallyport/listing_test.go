//go:build !agentonly

package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/clock"
	"github.com/sallyport/sallyport/internal/store"
)

// runCLIStderr is runCLI that returns stderr too.
func runCLIStderr(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(append(args, "--log-level", "error"))
	err = root.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

// TestTokenListShowsState: `sallyport token list` has a STATE column that
// says, by the gateway's clock, whether each token can still enroll an
// agent: usable, expired or used-up. It showed only the expiry date and
// the counts, so an administrator had to work it out.
func TestTokenListShowsState(t *testing.T) {
	ctx := context.Background()
	db, err := store.OpenMemory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	// The gateway's clock is two days behind this machine's: a token that
	// expired by this machine's clock is still usable by the gateway's.
	clk := clock.NewFake(time.Now().Add(-48 * time.Hour))
	const adminTok = "list-admin-Secret-7d2a"
	g, err := gateway.New(gateway.Config{TunnelTLS: &tls.Config{}, Store: db, AdminToken: adminTok, Clock: clk,
		Tokens: []gateway.Token{{Token: "spt_config", Group: "g"}}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.AdminHandler())
	t.Cleanup(srv.Close)
	now := clk.Now()
	for _, tok := range []store.Token{
		{ID: "t-usable", MaxUses: 1, Expires: now.Add(time.Hour)},
		{ID: "t-by-gateway-clock", MaxUses: 1, Expires: now.Add(24 * time.Hour)}, // past by this machine's
		{ID: "t-spent", MaxUses: 1, Used: 1, Expires: now.Add(time.Hour)},
		{ID: "t-expired", MaxUses: 3, Expires: now.Add(-time.Minute)},
	} {
		tok.Hash, tok.Group, tok.Created = sha256.Sum256([]byte(tok.ID)), "g", now
		if err := db.CreateToken(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	tokFile := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(tokFile, []byte(adminTok), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SALLYPORT_ADMIN_TOKEN", "")
	out, err := runCLI(t, "token", "list", "--admin-url", srv.URL, "--admin-token-file", tokFile)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if h := strings.Fields(lines[0]); len(h) != 7 || h[2] != "USED" || h[6] != "STATE" {
		t.Fatalf("header %q: want STATE last, the other columns where they were", lines[0])
	}
	got := map[string]string{}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		got[f[0]] = f[len(f)-1]
	}
	want := map[string]string{"config-0": "usable", "t-usable": "usable", "t-by-gateway-clock": "usable",
		"t-spent": "used-up", "t-expired": "expired"}
	for id, st := range want {
		if got[id] != st {
			t.Errorf("token %s: state %q, want %q\n%s", id, got[id], st, out)
		}
	}
}

// TestEnrollSameNameNote: enrolling a second agent under a name that an
// unrevoked connector of the group has is not refused (installing an agent
// again is normal), but `agent enroll` says which connector has the name
// too and how to revoke it, and `connector list` marks both. Nothing said
// so before: the old connector stayed "ok" until its certificate expired.
func TestEnrollSameNameNote(t *testing.T) {
	rig, admin := enrollRig(t)
	fp := tunnelFingerprint(t, rig.Tunnel)
	enroll := func(name string) (id, note string) {
		t.Helper()
		dir := filepath.Join(t.TempDir(), "agent")
		out, errOut, err := runCLIStderr(t, "agent", "enroll", "--gateway", rig.Tunnel, "--token", singleUseToken(t, admin),
			"--data-dir", dir, "--gateway-fingerprint", fp, "--name", name)
		if err != nil || !strings.HasPrefix(out, "enrolled: connector ") {
			t.Fatalf("enroll %s: %q, %v", name, out, err)
		}
		return strings.Fields(out)[2], errOut
	}
	listStatus := func() map[string]string {
		t.Helper()
		out, err := runCLI(t, append([]string{"connector", "list"}, admin...)...)
		if err != nil {
			t.Fatal(err)
		}
		st := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
			// STATUS follows CERT EXPIRES, the last time (RFC 3339, UTC).
			id, _, _ := strings.Cut(l, " ")
			st[id] = strings.TrimSpace(l[strings.LastIndex(l, "Z ")+1:])
		}
		return st
	}
	old, note := enroll("web")
	if note != "" {
		t.Fatalf("the first enrollment of a name printed %q", note)
	}
	other, _ := enroll("db")
	again, note := enroll("web")
	if !strings.Contains(note, "connector "+old+" is also named \"web\"") ||
		!strings.Contains(note, "sallyport connector revoke "+old) || strings.Contains(note, again) {
		t.Fatalf("enrolling a name again printed %q; want a note naming %s and how to revoke it", note, old)
	}
	st := listStatus()
	if !strings.Contains(st[old], "name used by 2") || !strings.Contains(st[again], "name used by 2") || st[other] != "ok" {
		t.Fatalf("connector list statuses %q: want %s and %s marked, %s ok", st, old, again, other)
	}
	if _, err := runCLI(t, append([]string{"connector", "revoke", old}, admin...)...); err != nil {
		t.Fatal(err)
	}
	if st := listStatus(); st[again] != "ok" || !strings.HasPrefix(st[old], "revoked ") {
		t.Fatalf("after revoking %s: statuses %q", old, st)
	}
	if _, note := enroll("web"); !strings.Contains(note, "connector "+again+" is") || strings.Contains(note, old) {
		t.Fatalf("a third agent named web printed %q; want only %s named", note, again)
	}
}
