package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sallyport/sallyport/internal/pgtest"
	"github.com/sallyport/sallyport/internal/store"
)

// readAllFirstStore is a store whose connector reads, once read, wait
// until n of them are: checks made before a write all see the state before
// any write, as when n revokes come at the same instant.
type readAllFirstStore struct {
	*store.DB
	arrive func()
}

func (s readAllFirstStore) Connector(ctx context.Context, id string) (store.Connector, error) {
	c, err := s.DB.Connector(ctx, id)
	s.arrive()
	return c, err
}

// barrier returns a function that blocks its callers until n calls have
// been made; later calls pass.
func barrier(n int) func() {
	var mu sync.Mutex
	all := make(chan struct{})
	return func() {
		mu.Lock()
		n--
		if n == 0 {
			close(all)
		}
		mu.Unlock()
		<-all
	}
}

// TestConcurrentRevokesRevokeOnce: 16 revokes of one connector at the same
// instant, through two gateway replicas on one database, SQLite and
// PostgreSQL: exactly one answers that it revoked the connector, the
// others already_revoked; one "connector revoked" line and one count in
// sallyport_gateway_revocations_total between the replicas; and each
// replica's session of the connector is closed. Before, every revoke that
// read the connector before the first one's write logged and counted it
// (16 lines and 16 counts here).
func TestConcurrentRevokesRevokeOnce(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			ctx := context.Background()
			must := mustStore(t)
			var a, b *store.DB
			if db == "sqlite" {
				dir := t.TempDir()
				a, b = must(store.Open(ctx, dir)), must(store.Open(ctx, dir))
			} else {
				dsn := pgtest.DSN(t)
				a, b = must(store.OpenPostgres(ctx, dsn)), must(store.OpenPostgres(ctx, dsn))
			}
			if err := a.AddConnector(ctx, store.Connector{ID: "c1", Name: "edge", Group: "g", Enrolled: time.Now()}); err != nil {
				t.Fatal(err)
			}
			const n = 16
			arrive := barrier(n)
			var gs []*Gateway
			var logs []*observer.ObservedLogs
			var held []*fakeSession
			for i, s := range []*store.DB{a, b} {
				g, _, l := newObservedAdmin(t, readAllFirstStore{s, arrive})
				gs, logs = append(gs, g), append(logs, l)
				held = append(held, addProcessSession(t, g.registry, "s"+string(rune('a'+i)), "c1", "p"+string(rune('a'+i))))
			}
			answers := make([]APIRevoked, n)
			var wg sync.WaitGroup
			for i := range n {
				h := gs[i%2].AdminHandler()
				wg.Go(func() {
					req := httptest.NewRequest("POST", "/api/v1/connectors/c1/revoke", nil)
					req.Header.Set("Authorization", "Bearer "+testAdminToken)
					w := httptest.NewRecorder()
					h.ServeHTTP(w, req)
					if w.Code != http.StatusOK {
						t.Errorf("revoke %d: %d %s", i, w.Code, w.Body)
						return
					}
					if err := json.Unmarshal(w.Body.Bytes(), &answers[i]); err != nil {
						t.Errorf("revoke %d: %v in %s", i, err, w.Body)
					}
				})
			}
			wg.Wait()
			revoked := 0
			for _, a := range answers {
				if !a.AlreadyRevoked {
					revoked++
				}
				if a.Revoked == nil || !a.Revoked.Equal(*answers[0].Revoked) {
					t.Errorf("answer revoked at %v, another at %v: want the first revocation time in all", a.Revoked, answers[0].Revoked)
				}
			}
			lines, counted := 0, 0.0
			for i, g := range gs {
				lines += logs[i].FilterMessage("connector revoked").Len()
				counted += testutil.ToFloat64(g.metrics.revocations)
			}
			if revoked != 1 || lines != 1 || counted != 1 {
				t.Errorf("%d revokes at once: %d answered revoked (others already_revoked), %d 'connector revoked' lines, "+
					"revocations_total %v; want 1, 1, 1", n, revoked, lines, counted)
			}
			for i, s := range held {
				select {
				case <-s.Done():
				default:
					t.Errorf("replica %d still holds the revoked connector's session", i)
				}
			}
		})
	}
}

// mustStore returns a function that fails t on err and closes s when t
// ends: mustStore(t)(store.Open(ctx, dir)).
func mustStore(t *testing.T) func(s *store.DB, err error) *store.DB {
	return func(s *store.DB, err error) *store.DB {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
}
