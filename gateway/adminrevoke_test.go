package gateway

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sallyport/sallyport/internal/clock"
	"github.com/sallyport/sallyport/internal/selfsigned"
	"github.com/sallyport/sallyport/internal/store"
)

// storeWithConnector is an in-memory store holding connector id (name
// edge, group g), closed when the test ends.
func storeWithConnector(t *testing.T, id string) *store.DB {
	t.Helper()
	db, err := store.OpenMemory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.AddConnector(context.Background(), store.Connector{ID: id, Name: "edge", Group: "g", Enrolled: time.Now()}); err != nil {
		t.Fatal(err)
	}
	return db
}

// newObservedAdmin is a gateway (not started) on st whose admin API is
// served on a loopback httptest server; it returns the gateway, the URL
// and the gateway's log.
func newObservedAdmin(t *testing.T, st Store) (*Gateway, string, *observer.ObservedLogs) {
	t.Helper()
	cert, _, _, err := selfsigned.LoadOrCreate(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	g, err := New(Config{
		PublicAddr: "127.0.0.1:0", TunnelAddr: "127.0.0.1:0", Log: zap.New(core),
		TunnelTLS: &tls.Config{Certificates: []tls.Certificate{cert}}, Store: st, AdminToken: testAdminToken,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.AdminHandler())
	t.Cleanup(srv.Close)
	return g, srv.URL, logs
}

// TestRevokeTwice: revoking a revoked connector answers 200 with the
// connector, its first revocation time and already_revoked, and is neither
// logged nor counted again. The second revoke was logged "connector
// revoked" and counted in sallyport_gateway_revocations_total again
// (docwalk3 B11).
func TestRevokeTwice(t *testing.T) {
	db := storeWithConnector(t, "c1")
	g, base, logs := newObservedAdmin(t, db)
	var answers []APIRevoked
	for range 2 {
		res, body := adminDo(t, base, "POST", "/api/v1/connectors/c1/revoke", "")
		if res.StatusCode != http.StatusOK {
			t.Fatalf("revoke: %d %s", res.StatusCode, body)
		}
		var a APIRevoked
		if err := json.Unmarshal([]byte(body), &a); err != nil {
			t.Fatal(err)
		}
		answers = append(answers, a)
	}
	if answers[0].AlreadyRevoked || answers[0].Revoked == nil {
		t.Errorf("first revoke: %+v; want revoked now, not already", answers[0])
	}
	if !answers[1].AlreadyRevoked || answers[1].Revoked == nil || !answers[1].Revoked.Equal(*answers[0].Revoked) {
		t.Errorf("second revoke: %+v; want already revoked at the first time %v", answers[1], answers[0].Revoked)
	}
	if n := logs.FilterMessage("connector revoked").Len(); n != 1 {
		t.Errorf("%d 'connector revoked' lines, want 1", n)
	}
	if n := testutil.ToFloat64(g.metrics.revocations); n != 1 {
		t.Errorf("revocations_total %v, want 1", n)
	}
}

// TestRevokeAgainClosesHeldSessions: a connector revoked through another
// replica (the store says so) whose session this replica still holds,
// before its store sweep: revoking it again here closes that session at
// once, as the first revoke did where it ran, though it is not counted
// again.
func TestRevokeAgainClosesHeldSessions(t *testing.T) {
	ctx := context.Background()
	db := storeWithConnector(t, "c1")
	g, base, _ := newObservedAdmin(t, db)
	s := addProcessSession(t, g.registry, "s1", "c1", "p1")
	if _, err := db.RevokeConnector(ctx, "c1", time.Now()); err != nil { // another replica's revoke
		t.Fatal(err)
	}
	res, body := adminDo(t, base, "POST", "/api/v1/connectors/c1/revoke", "")
	var a APIRevoked
	if err := json.Unmarshal([]byte(body), &a); err != nil || res.StatusCode != http.StatusOK || !a.AlreadyRevoked {
		t.Fatalf("revoke: %d %s (%v); want 200, already revoked", res.StatusCode, body, err)
	}
	select {
	case <-s.Done():
	default:
		t.Error("the session of the revoked connector that this replica held is still open after revoking it again")
	}
	if n := testutil.ToFloat64(g.metrics.revocations); n != 0 {
		t.Errorf("revocations_total %v, want 0 (revoked elsewhere)", n)
	}
}

// writeRefusedStore is a store whose writes of revocations are refused,
// as on a read-only PostgreSQL standby.
type writeRefusedStore struct{ *store.DB }

func (writeRefusedStore) RevokeConnectorFirst(context.Context, string, time.Time) (store.Connector, bool, error) {
	return store.Connector{}, false, errors.New("cannot execute UPDATE in a read-only transaction")
}

// TestRevokeRevokedOnReadOnlyStore: revoking a connector that is revoked
// already needs no write, so a replica whose writes are refused (a
// read-only standby) answers 200 already_revoked and closes the sessions it
// holds. Before, it always ran the UPDATE and answered 500. A connector not
// revoked yet still needs the write, and its refusal is still an error.
func TestRevokeRevokedOnReadOnlyStore(t *testing.T) {
	ctx := context.Background()
	db := storeWithConnector(t, "c1")
	if err := db.AddConnector(ctx, store.Connector{ID: "c2", Name: "edge2", Group: "g", Enrolled: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.RevokeConnector(ctx, "c1", time.Now()); err != nil { // revoked through the primary
		t.Fatal(err)
	}
	g, base, _ := newObservedAdmin(t, writeRefusedStore{db})
	s := addProcessSession(t, g.registry, "s1", "c1", "p1")
	res, body := adminDo(t, base, "POST", "/api/v1/connectors/c1/revoke", "")
	var a APIRevoked
	if err := json.Unmarshal([]byte(body), &a); err != nil || res.StatusCode != http.StatusOK || !a.AlreadyRevoked {
		t.Fatalf("revoke of a revoked connector on a read-only store: %d %s (%v); want 200, already revoked", res.StatusCode, body, err)
	}
	if !isClosed(s.Done()) {
		t.Error("the session of the revoked connector is still open")
	}
	if res, body := adminDo(t, base, "POST", "/api/v1/connectors/c2/revoke", ""); res.StatusCode != http.StatusInternalServerError {
		t.Errorf("revoke of a connector not revoked yet on a read-only store: %d %s; want 500", res.StatusCode, body)
	}
}

// TestAdminStoreDown: an admin call while the store does not answer gets
// 503 saying so, as /readyz judges it, not "list tokens failed" with a 500
// (docwalk3 B11: the database was down). Another failure stays a 500.
func TestAdminStoreDown(t *testing.T) {
	ctx := context.Background()
	t.Run("down", func(t *testing.T) {
		db, err := store.OpenMemory(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, base, _ := newObservedAdmin(t, db)
		db.Close() // the database no longer answers
		for _, c := range []struct{ method, path, body string }{
			{"GET", "/api/v1/tokens", ""}, {"GET", "/api/v1/connectors", ""},
			{"POST", "/api/v1/tokens", `{"group":"g"}`}, {"POST", "/api/v1/connectors/c1/revoke", ""},
		} {
			res, body := adminDo(t, base, c.method, c.path, c.body)
			if res.StatusCode != http.StatusServiceUnavailable ||
				!strings.Contains(body, "the gateway's store (database) does not answer; see the gateway log") {
				t.Errorf("%s %s with the store down: %d %s; want 503 saying the store does not answer",
					c.method, c.path, res.StatusCode, body)
			}
		}
	})
	t.Run("other failure", func(t *testing.T) {
		db, err := store.OpenMemory(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		_, base, _ := newObservedAdmin(t, &failingTokens{DB: db})
		res, body := adminDo(t, base, "GET", "/api/v1/tokens", "")
		if res.StatusCode != http.StatusInternalServerError || !strings.Contains(body, "list tokens failed; see the gateway log") {
			t.Errorf("list tokens failing with the store up: %d %s; want 500", res.StatusCode, body)
		}
	})
}

// failingTokens is a store that answers, but fails to list tokens.
type failingTokens struct{ *store.DB }

func (*failingTokens) Tokens(context.Context) ([]store.Token, error) {
	return nil, errors.New("a row the store cannot read")
}

// TestReadyzSaysShuttingDown: during a stop /readyz answers 503 "shutting
// down", with a shutdown delay and without; it said "not serving", as for
// a gateway that never started (docwalk3 B11).
func TestReadyzSaysShuttingDown(t *testing.T) {
	for _, delay := range []time.Duration{0, time.Hour} {
		fake := clock.NewFake(time.Now())
		g, logs, stop, served := startObservedShutdownGateway(t, Config{ShutdownDelay: delay, Clock: fake,
			ShutdownGrace: time.Minute})
		g.upgrades.Add(1) // a WebSocket in flight: the shutdown waits for it
		stop()
		<-logs // the shutdown began: /readyz says 503 from now on
		res, err := http.Get("http://" + g.AdminAddr().String() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusServiceUnavailable || strings.TrimSpace(string(b)) != "shutting down" {
			t.Errorf("delay %v: /readyz during the stop: %d %q; want 503 shutting down", delay, res.StatusCode, b)
		}
		fake.Advance(delay)
		g.upgrades.Done()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}
	// A gateway that has not started says so.
	db, err := store.OpenMemory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, base, _ := newObservedAdmin(t, db)
	res, err := http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable || strings.TrimSpace(string(b)) != "not serving" {
		t.Errorf("/readyz of a gateway not started: %d %q; want 503 not serving", res.StatusCode, b)
	}
}

// startObservedShutdownGateway is startShutdownGateway with a log whose
// channel gets a value when the shutdown begins (its first line).
func startObservedShutdownGateway(t *testing.T, cfg Config) (*Gateway, <-chan struct{}, context.CancelFunc, <-chan error) {
	t.Helper()
	began := make(chan struct{}, 1)
	core, _ := observer.New(zap.InfoLevel)
	cfg.Log = zap.New(core, zap.Hooks(func(e zapcore.Entry) error {
		if strings.HasPrefix(e.Message, "gateway shutting down") {
			select {
			case began <- struct{}{}:
			default:
			}
		}
		return nil
	}))
	g, cancel, served := startShutdownGateway(t, cfg)
	return g, began, cancel, served
}
