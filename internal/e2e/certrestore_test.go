package e2e

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/testrig"
)

// backupTo copies the gateway's store into dir, as `sqlite3 … ".backup"`
// does while the gateway runs.
func (tr *trustRig) backupTo(dir string) {
	tr.t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(tr.dir, store.FileName))
	if err != nil {
		tr.t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`VACUUM INTO ?`, filepath.Join(dir, store.FileName)); err != nil {
		tr.t.Fatalf("backup: %v", err)
	}
}

// TestRestoredStoreKeepsRenewedAgent: the gateway's data_dir is restored
// from a backup taken before an agent renewed. The agent presents a
// certificate newer than the one the store knows: the gateway takes it as
// the connector's newest (the store missed the renewal) instead of
// refusing it as retired, and the certificate the backup named is retired
// in its place. Without the fix every agent that renewed since the backup
// was locked out ("was replaced by a renewal and is retired") and had to
// enroll again.
func TestRestoredStoreKeepsRenewedAgent(t *testing.T) {
	tr := newTimedTrustRig(t, nil)
	a := tr.startRollingAgent(1)
	old := a.A.Certificate()
	oldSerial := old.Cert.Leaf.SerialNumber.Text(16)
	waitFor(t, "the first certificate in use", func() bool {
		c, err := tr.store.Connector(context.Background(), old.ConnectorID)
		return err == nil && c.CertInUse && c.CertSerial == oldSerial
	})
	backup := t.TempDir()
	tr.backupTo(backup)

	cur := tr.renewNow(a)
	curSerial := cur.Cert.Leaf.SerialNumber.Text(16)
	waitFor(t, "the renewed certificate in use", func() bool {
		c, err := tr.store.Connector(context.Background(), old.ConnectorID)
		return err == nil && c.CertInUse && c.CertSerial == curSerial
	})

	// Restore the backup: the store names the old certificate, in use.
	tr.dir = backup
	tr.restartOnSameFile()
	if c, err := tr.store.Connector(context.Background(), old.ConnectorID); err != nil || c.CertSerial != oldSerial {
		t.Fatalf("restored store: %+v, %v", c, err)
	}
	if err := tr.dialWith(cur); err != nil {
		t.Fatalf("the agent's renewed certificate after the restore: %v", err)
	}
	tr.WaitSessions(testrig.Group, 1)
	c, err := tr.store.Connector(context.Background(), old.ConnectorID)
	if err != nil || !c.CertInUse || c.CertSerial != curSerial || !c.CertExpires.Equal(cur.Expires()) {
		t.Fatalf("store after the restore: %+v, %v; want serial %s in use", c, err, curSerial)
	}
	if err := tr.dialWith(old); err == nil || !strings.Contains(err.Error(), "retired") {
		t.Fatalf("the certificate the backup named, after its successor was seen: %v", err)
	}
}

// TestRetiredCertStaysRetired: a certificate retired once stays retired
// after the connector's next renewal, in the window before the newest
// certificate is in use, where only the certificate it replaces (the one
// the agent renewed with) keeps working. Without the fix every older,
// unexpired certificate opened sessions and renewed again in that window.
func TestRetiredCertStaysRetired(t *testing.T) {
	tr := newTimedTrustRig(t, nil)
	a := tr.startRollingAgent(1)
	old := a.A.Certificate()
	cur := tr.renewNow(a)
	curSerial := cur.Cert.Leaf.SerialNumber.Text(16)
	waitFor(t, "the renewed certificate in use", func() bool {
		c, err := tr.store.Connector(context.Background(), old.ConnectorID)
		return err == nil && c.CertInUse && c.CertSerial == curSerial
	})
	if err := tr.dialWith(old); err == nil || !strings.Contains(err.Error(), "retired") {
		t.Fatalf("the retired certificate: %v", err)
	}

	// A renewal whose answer was lost: the newest is not in use yet.
	if err := tr.rawRenew(cur); err != nil {
		t.Fatal(err)
	}
	if c, err := tr.store.Connector(context.Background(), old.ConnectorID); err != nil || c.CertInUse || c.CertSerial == curSerial {
		t.Fatalf("store after the lost renewal: %+v, %v", c, err)
	}
	if err := tr.dialWith(cur); err != nil {
		t.Fatalf("the certificate the agent renewed with: %v", err)
	}
	if err := tr.dialWith(old); err == nil || !strings.Contains(err.Error(), "retired") {
		t.Fatalf("the retired certificate, after the next renewal: %v", err)
	}
	wantStatus(t, tr.rawRenew(old), codes.Unauthenticated, "retired")
}

// TestStolenKeyRetiresOnceAgentReconnects: a thief holding the agent's key
// renews with it right after the agent renewed, before the agent's new
// session is up. The agent's renewed certificate, no longer the newest,
// used to be accepted without being recorded in use, so the stolen
// certificate kept opening sessions and renewing, days later, with nothing
// in the log (found by a probe). Now a certificate newer than the one in
// use is recorded in use when it is presented: the stolen one is retired,
// and a thief who presents its own renewal later locks the agent out
// instead, which the log shows, as the README's security model says.
func TestStolenKeyRetiresOnceAgentReconnects(t *testing.T) {
	tr := newTrustRig(t, nil)
	ctx := context.Background()
	a, err := agent.Enroll(ctx, agent.EnrollConfig{Gateway: tr.Tunnel, TLS: tr.tunnelTLS(), Token: testrig.Token})
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.dialWith(a); err != nil { // the first certificate in use
		t.Fatal(err)
	}
	tr.clock.Advance(20 * 24 * time.Hour)
	b, err := tr.renewKeep(a) // the agent renews
	if err != nil {
		t.Fatal(err)
	}
	tr.clock.Advance(time.Second)
	stolen, err := tr.renewKeep(a) // the thief, with the same key, before the agent reconnects
	if err != nil {
		t.Fatalf("the thief's renewal: %v", err)
	}
	tr.clock.Advance(time.Second)
	if err := tr.dialWith(b); err != nil {
		t.Fatalf("the agent's renewed certificate: %v", err)
	}
	c, err := tr.store.Connector(ctx, a.ConnectorID)
	if err != nil || !c.CertInUse || c.CertSerial != b.Cert.Leaf.SerialNumber.Text(16) {
		t.Fatalf("store after the agent reconnected: %+v, %v; want the agent's certificate in use", c, err)
	}
	tr.clock.Advance(5 * 24 * time.Hour)
	if err := tr.dialWith(a); err == nil || !strings.Contains(err.Error(), "retired") {
		t.Fatalf("the stolen certificate, days after the agent renewed and reconnected: %v", err)
	}
	wantStatus(t, tr.rawRenew(a), codes.Unauthenticated, "retired")
	// The thief's own renewal, presented now, takes over: the agent is
	// locked out, and its refusals say why.
	if err := tr.dialWith(stolen); err != nil {
		t.Fatalf("the thief's newer certificate: %v", err)
	}
	if err := tr.dialWith(b); err == nil || !strings.Contains(err.Error(), "retired") {
		t.Fatalf("the agent's certificate after the thief's newer one was seen: %v", err)
	}
}
