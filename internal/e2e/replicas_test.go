package e2e

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/pgtest"
	"github.com/sallyport/sallyport/internal/testrig"
	"github.com/sallyport/sallyport/tunnel"
)

// replicaSweep is how often the replicas of these tests check their
// sessions against the store (1 minute in production).
const replicaSweep = 20 * time.Millisecond

// newReplica starts a gateway whose store is the PostgreSQL database dsn
// names, through its own handle: one replica of several on that database.
func newReplica(t *testing.T, dsn string) *trustRig {
	t.Helper()
	return buildTrustRig(t, dsn, false, func(c *gateway.Config) {
		c.StoreSweep = replicaSweep
		c.EnrollFailures = 100
	})
}

// TestReplicasSharePostgres: two gateways on one PostgreSQL database share
// the connector CA, enrolled connectors and tokens. A single-use token
// created at one enrolls once across both, also when enrollments race at
// both; an agent enrolled through one is listed by the other; revoked
// through the other, its session at the first is closed within that
// gateway's store sweep, and it cannot come back at either.
func TestReplicasSharePostgres(t *testing.T) {
	dsn := pgtest.DSN(t)
	a := newReplica(t, dsn)
	b := newReplica(t, dsn)
	ctx := context.Background()
	if cas, err := a.store.CAs(ctx); err != nil || len(cas) != 1 {
		t.Fatalf("two replicas started on one database: %d CAs (%v), want 1", len(cas), err)
	}

	// A single-use token made at b enrolls an agent at a, once.
	tok := b.createToken(testrig.Group, "1h", 1)
	// One connection: an agent with two, dialling a alone while two
	// replicas are alive, lets a session go and dials again for another
	// replica for a second or two (agent/spread.go); a revocation in that
	// time refuses the new session at its hello, the agent stops, and a's
	// sweep finds nothing to close (failed once in session 23's CI).
	victim := a.startAgentConns(t.TempDir(), tok.Token, 1, true)
	id := victim.A.Certificate().ConnectorID
	for _, r := range []*trustRig{a, b} {
		_, err := agent.Enroll(ctx, agent.EnrollConfig{Gateway: r.Tunnel, TLS: r.tunnelTLS(), Token: tok.Token})
		if !errors.Is(err, agent.ErrEnrollRefused) || !strings.Contains(err.Error(), "already used") {
			t.Fatalf("the used token at %s: %v; want refused as already used", r.Tunnel, err)
		}
	}
	if !slices.ContainsFunc(b.connectors(), func(c gateway.APIConnector) bool { return c.ID == id }) {
		t.Fatalf("b does not list connector %s enrolled through a: %+v", id, b.connectors())
	}

	// Enrollments racing at both replicas for one use: one wins.
	race := a.createToken(testrig.Group, "1h", 1)
	if wins := raceEnroll(t, 8, race.Token, a, b); wins != 1 {
		t.Fatalf("%d of 8 racing enrollments at two replicas won, want exactly 1", wins)
	}

	// Revoked through b, the agent's sessions at a close at a's sweep.
	if code, body := b.admin("POST", "/api/v1/connectors/"+id+"/revoke", adminToken, nil); code != http.StatusOK {
		t.Fatalf("revoke at b = %d %s", code, body)
	}
	a.waitLog("agent sessions closed: the connector was revoked")
	if err := victim.Exited(t); !errors.Is(err, tunnel.ErrRevoked) {
		t.Fatalf("the agent revoked at the other replica: %v; want ErrRevoked", err)
	}
	waitFor(t, "a's sessions of the revoked connector to end", func() bool { return a.G.Registry().Count(testrig.Group) == 0 })
	creds := victim.A.Certificate()
	for _, r := range []*trustRig{a, b} {
		if err := r.dialWith(creds); err == nil || !strings.Contains(err.Error(), "revoked") {
			t.Fatalf("a new session of the revoked connector at %s: %v", r.Tunnel, err)
		}
	}
}

// relay is a loopback TCP relay to the PostgreSQL test server that a test
// cuts and restores: the database going away and coming back, as the
// gateway sees it.
type relay struct {
	t      *testing.T
	server string // the database server's address
	addr   string // the relay's, the same after each up

	mu    sync.Mutex
	ln    net.Listener          // nil while down; guarded by mu
	conns map[net.Conn]struct{} // open connections; guarded by mu
	wg    sync.WaitGroup        // accept loop and copies
}

// newRelay starts a relay on 127.0.0.1 and a free port, and returns it and
// dsn pointing at it. It is down when the test ends.
func newRelay(t *testing.T, dsn string) (*relay, string) {
	t.Helper()
	_, server := pgtest.Via(t, dsn, "127.0.0.1:0")
	r := &relay{t: t, server: server, addr: "127.0.0.1:0", conns: map[net.Conn]struct{}{}}
	r.up()
	via, _ := pgtest.Via(t, dsn, r.addr)
	t.Cleanup(r.down)
	return r, via
}

// up listens again on the relay's address and relays what connects.
func (r *relay) up() {
	r.t.Helper()
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		r.t.Fatalf("relay: %v", err)
	}
	r.mu.Lock()
	r.ln, r.addr = ln, ln.Addr().String()
	r.mu.Unlock()
	r.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", r.server)
			if err != nil {
				c.Close()
				continue
			}
			r.mu.Lock()
			r.conns[c], r.conns[s] = struct{}{}, struct{}{}
			r.mu.Unlock()
			r.wg.Go(func() { io.Copy(s, c); s.Close() })
			r.wg.Go(func() { io.Copy(c, s); c.Close() })
		}
	})
}

// down closes the listener and every relayed connection, and waits for
// the relay's goroutines.
func (r *relay) down() {
	r.mu.Lock()
	if r.ln != nil {
		r.ln.Close()
		r.ln = nil
	}
	for c := range r.conns {
		c.Close()
		delete(r.conns, c)
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// TestReplicaOutlivesDatabaseOutage: a gateway whose PostgreSQL database
// goes away keeps running and keeps relaying over the sessions it has; its
// sweep cannot say, so it closes nothing; readiness and the admin API say
// the store is unavailable; once the database is back, all works again
// without a restart.
func TestReplicaOutlivesDatabaseOutage(t *testing.T) {
	db, dsn := newRelay(t, pgtest.DSN(t))
	tr := newReplica(t, dsn)
	tr.startAgent(t.TempDir(), testrig.Token, true)
	if code := tr.get(); code != http.StatusOK {
		t.Fatalf("GET = %d", code)
	}
	ready := func() int {
		res, err := http.Get(tr.AdminURL() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}

	// Both sessions are through their start (the registry lists a session
	// a moment before the gateway has logged it started).
	waitFor(t, "both sessions to have started", func() bool { return tr.logs.FilterMessage("agent session started").Len() == 2 })
	db.down()
	tr.waitLog("store sweep: connector not read; its sessions stay")
	if n := tr.G.Registry().Count(testrig.Group); n != 2 {
		t.Fatalf("%d sessions while the database is away, want the 2 it had", n)
	}
	if code := tr.get(); code != http.StatusOK {
		t.Fatalf("GET while the database is away = %d, want 200 over the open sessions", code)
	}
	if code := ready(); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz while the database is away = %d, want 503", code)
	}
	if code, body := tr.admin("GET", "/api/v1/connectors", adminToken, nil); code != http.StatusServiceUnavailable ||
		!strings.Contains(string(body), "does not answer") {
		t.Fatalf("connector list while the database is away = %d %s, want 503 saying the store does not answer", code, body)
	}

	db.up()
	waitFor(t, "/readyz once the database is back", func() bool { return ready() == http.StatusOK })
	if cs := tr.connectors(); len(cs) != 1 {
		t.Fatalf("connectors once the database is back: %+v", cs)
	}
	if code := tr.get(); code != http.StatusOK {
		t.Fatalf("GET once the database is back = %d", code)
	}
}
