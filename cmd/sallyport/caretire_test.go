//go:build !agentonly

package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/store"
)

// TestCARetireRefusesLiveCertificates: `gateway ca rotate
// --retire-previous` run right after a rotation refuses while a connector
// that is not revoked holds an unexpired certificate from the previous CA,
// and names it; revoked connectors, expired certificates and connectors
// enrolled after the rotation do not count, and --force retires anyway.
// It used to retire at once (the docwalk helper's run): the running agent
// was refused at its next session ("agent refused at TLS ... signed by
// unknown authority") though its certificate had 30 days left.
func TestCARetireRefusesLiveCertificates(t *testing.T) {
	ctx := context.Background()
	dataDir, st := newCAStore(t)
	now := time.Now()
	conn := func(id string, enrolled, expires, revoked time.Time) store.Connector {
		return store.Connector{ID: id, Name: id + "-host", Group: "default", Enrolled: enrolled,
			CertSerial: id, CertExpires: expires, Revoked: revoked}
	}
	for _, c := range []store.Connector{
		conn("c-live", now.Add(-time.Hour), now.Add(719*time.Hour), time.Time{}),
		conn("c-revoked", now.Add(-time.Hour), now.Add(719*time.Hour), now.Add(-time.Minute)),
		conn("c-expired", now.Add(-800*time.Hour), now.Add(-80*time.Hour), time.Time{}),
	} {
		if err := st.AddConnector(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	if out, err := runCLI(t, "gateway", "ca", "rotate", "--data-dir", dataDir); err != nil || !strings.Contains(out, "2 CA(s)") {
		t.Fatalf("ca rotate = %q, %v", out, err)
	}
	// Enrolled after the rotation: its certificate is from the new CA.
	st, err := store.Open(ctx, dataDir)
	if err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Second)
	if err := st.AddConnector(ctx, conn("c-new", later, later.Add(720*time.Hour), time.Time{})); err != nil {
		t.Fatal(err)
	}
	st.Close()

	out, err := runCLI(t, "gateway", "ca", "rotate", "--retire-previous", "--data-dir", dataDir)
	if err == nil {
		t.Fatalf("ca rotate --retire-previous right after a rotation = %q; want a refusal", out)
	}
	for _, w := range []string{"not retiring: 1 connector(s)", "c-live (c-live-host, group default", "--force", "connector revoke"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("refusal %q; want it to say %q", err, w)
		}
	}
	for _, no := range []string{"c-revoked", "c-expired", "c-new"} {
		if strings.Contains(err.Error(), no) {
			t.Errorf("refusal %q names %q", err, no)
		}
	}
	out, err = runCLI(t, "gateway", "ca", "rotate", "--retire-previous", "--force", "--data-dir", dataDir)
	if err != nil || !strings.Contains(out, "removed 1 previous") {
		t.Fatalf("ca rotate --retire-previous --force = %q, %v", out, err)
	}
}

// newCAStore is a store with its connector CA in a new data_dir, open
// (the caller closes it).
func newCAStore(t *testing.T) (dataDir string, st *store.DB) {
	t.Helper()
	ctx := context.Background()
	dataDir = filepath.Join(t.TempDir(), "data")
	st, err := store.Open(ctx, dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&pki.Authority{Store: st}).Init(ctx); err != nil {
		st.Close()
		t.Fatal(err)
	}
	return dataDir, st
}
