package preauth

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/assertion"
	"github.com/sallyport/sallyport/internal/devoidc"
	"github.com/sallyport/sallyport/internal/pgtest"
	"github.com/sallyport/sallyport/internal/store"
)

// Renewals with a provider that rotates refresh tokens and detects reuse:
// the rig's provider revokes every refresh token of a sign-in when a used
// one comes back (devoidc.Config.RevokeOnReuse), as Auth0, Okta and
// Keycloak do.

// The gateway's store shares renewals: UseSignOutStore, which the gateway
// calls with it, finds it a RefreshStore.
var _ RefreshStore = (*store.DB)(nil)

func rotatingRig(t *testing.T) *idpRig {
	t.Helper()
	return newIDPRigWith(t, func(c *devoidc.Config) { c.RevokeOnReuse = true })
}

// replica starts a second gateway in front of the rig's provider, with
// the rig's cookie key, clock and policy, on the store st (nil: none), as
// a replica of the rig's gateway; it returns its address.
func (rg *idpRig) replica(st SignOutStore) string {
	rg.t.Helper()
	return rg.replicaAhead(st, 0)
}

// replicaAhead is rg.replica whose clock is ahead of the rig's by ahead.
func (rg *idpRig) replicaAhead(st SignOutStore, ahead time.Duration) string {
	rg.t.Helper()
	now := func() time.Time { return rg.clk.Now().Add(ahead) }
	keys, err := assertion.NewKeySet(assertion.KeySetConfig{Now: now})
	if err != nil {
		rg.t.Fatal(err)
	}
	tr := &http.Transport{}
	rg.t.Cleanup(tr.CloseIdleConnections)
	svc, err := New(Config{
		Providers: []ProviderConfig{{Name: "corp", Issuer: rg.idpTS.URL, ClientID: rigClient, ClientSecret: "s"}},
		CookieKey: make([]byte, KeySize), Keys: keys, Now: now,
		HTTPClient: &http.Client{Transport: tr, Timeout: 10 * time.Second},
	})
	if err != nil {
		rg.t.Fatal(err)
	}
	if st != nil {
		svc.UseSignOutStore(st)
	}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if handled, err := svc.ServeEndpoint(w, r, r.URL.Path); handled {
			rigAnswer(w, err)
			return
		}
		id, err := svc.Authorize(w, r, &rg.pol, r.URL.Path)
		if err != nil {
			rigAnswer(w, err)
			return
		}
		_, _ = io.WriteString(w, "ok "+id.Subject)
	}))
	rg.t.Cleanup(ts.Close)
	return ts.URL
}

// sharedStores runs f with two handles on one new store, as two gateway
// replicas have: a SQLite file, and a PostgreSQL schema (skipped without
// the test server outside CI).
func sharedStores(t *testing.T, f func(t *testing.T, a, b SignOutStore)) {
	open := func(t *testing.T, o func(context.Context) (*store.DB, error)) SignOutStore {
		t.Helper()
		db, err := o(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	t.Run("sqlite", func(t *testing.T) {
		dir := t.TempDir()
		o := func(ctx context.Context) (*store.DB, error) { return store.Open(ctx, dir) }
		f(t, open(t, o), open(t, o))
	})
	t.Run("postgres", func(t *testing.T) {
		dsn := pgtest.DSN(t)
		o := func(ctx context.Context) (*store.DB, error) { return store.OpenPostgres(ctx, dsn) }
		f(t, open(t, o), open(t, o))
	})
}

// page is a GET of base+"/page" by the browser c that does not follow
// redirects: its status and body. For goroutines (no t.Fatal).
func page(c *http.Client, base string) (int, string) {
	res, err := noRedirects(c).Get(base + "/page")
	if err != nil {
		return 0, err.Error()
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	return res.StatusCode, string(b)
}

// signedInBrowser is a browser signed in at the rig's gateway.
func (rg *idpRig) signedInBrowser() *http.Client {
	rg.t.Helper()
	c := rg.browser()
	if res, body := rg.signIn(c, "/page"); res.StatusCode != http.StatusOK {
		rg.t.Fatalf("sign-in: %d %s", res.StatusCode, body)
	}
	return c
}

// waitRefresh waits (up to 10 s, then fails with failure) until done
// holds of the renewals in flight at the rig's gateway, which it gets
// under their lock.
func (rg *idpRig) waitRefresh(failure string, done func(wait map[string]*refreshCall) bool) {
	rg.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rg.svc.refresh.mu.Lock()
		ok := done(rg.svc.refresh.wait)
		rg.svc.refresh.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			rg.t.Fatal(failure)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitRenewals waits until no renewal of the rig's gateway is in flight.
func (rg *idpRig) waitRenewals() {
	rg.t.Helper()
	rg.waitRefresh("the renewal did not end", func(wait map[string]*refreshCall) bool { return len(wait) == 0 })
}

// waitWaiter waits until a request waits for a renewal of the rig's
// gateway.
func (rg *idpRig) waitWaiter() {
	rg.t.Helper()
	rg.waitRefresh("no request joined the renewal", func(wait map[string]*refreshCall) bool {
		n := 0
		for _, c := range wait {
			n += c.waiters
		}
		return n > 0
	})
}

// leaveDuringRenewal sends c's request for /page to the rig's gateway,
// waits until its renewal started at the provider (started, of
// rg.holdPath), cancels the request as a client that leaves would, and
// returns the status it got once it ended. The renewal goes on.
func (rg *idpRig) leaveDuringRenewal(c *http.Client, started <-chan struct{}) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	answered := make(chan int, 1)
	go func() {
		rec := httptest.NewRecorder()
		rg.serve(rec, rg.sessionRequest(ctx, c, "/page"))
		answered <- rec.Code
	}()
	<-started
	cancel() // the client leaves; the renewal goes on
	return <-answered
}

// statusWithCookie is the status of a GET of /page at the rig's gateway
// with the Cookie header cookie (asking for JSON, not a sign-in page).
func (rg *idpRig) statusWithCookie(cookie string) int {
	rg.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, rg.gwTS.URL+"/page", nil)
	req.Header.Set("Cookie", cookie)
	req.Header.Set("Accept", "application/json")
	res, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		rg.t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// TestRenewalSharedByReplicas: two replicas on one store that get the
// same expired session at the same moment renew it once: the second
// waits for the first one's renewal and hands out its result. Each used
// to renew it itself, and the provider refused the second use of the
// refresh token (and, detecting reuse, revoked the first one's new
// token): that user had to sign in again at once, the other at the next
// renewal.
func TestRenewalSharedByReplicas(t *testing.T) {
	sharedStores(t, func(t *testing.T, a, b SignOutStore) {
		rg := rotatingRig(t)
		rg.svc.UseSignOutStore(a)
		other := rg.replica(b)
		c := rg.signedInBrowser()
		started, release := rg.holdPath("/token")
		rg.clk.Advance(6 * time.Minute) // past the ID token's expiry
		tokens := rg.hits["/token"].Load()
		type answer struct {
			replica, body string
			status        int
		}
		answers := make(chan answer, 2)
		ask := func(name, base string) {
			st, body := page(c, base)
			answers <- answer{name, body, st}
		}
		go ask("first", rg.gwTS.URL)
		<-started // the first replica renews at the provider
		go ask("second", other)
		close(release)
		for range 2 {
			a := <-answers
			if a.status != http.StatusOK || a.body != "ok "+rigUser.Subject {
				t.Errorf("%s replica, the session renewed by both at once: %d %q; want 200 (the user keeps the session)", a.replica, a.status, a.body)
			}
		}
		if n := rg.hits["/token"].Load() - tokens; n != 1 {
			t.Errorf("%d token requests for one session renewed at two replicas, want 1", n)
		}
		if n := rg.idp.Reused(); n != 0 {
			t.Errorf("the provider saw %d refresh tokens used again, want none", n)
		}
		// The renewed session renews again, at either replica.
		rg.setHook(nil)
		for _, base := range []string{other, rg.gwTS.URL} {
			rg.clk.Advance(6 * time.Minute)
			if st, body := page(c, base); st != http.StatusOK {
				t.Errorf("the next renewal, at %s: %d %q; want 200", base, st, body)
			}
		}
	})
}

// TestRenewalKeptForBrowserThatMissedIt: a renewal whose client left
// before it ended (no request brought the browser the new cookie) is
// handed to the browser's next request with the old cookie, however
// late, at this gateway or a replica on its store; it was kept a minute,
// after which the old refresh token was refused and the user had to sign
// in again. Once a request has taken it to the browser, a copy of the
// old cookie gets it for refreshGrace only.
func TestRenewalKeptForBrowserThatMissedIt(t *testing.T) {
	run := func(t *testing.T, a, b SignOutStore) {
		rg := rotatingRig(t)
		if a != nil {
			rg.svc.UseSignOutStore(a)
		}
		next := rg.gwTS.URL
		if b != nil {
			next = rg.replica(b) // the browser's next request goes to a replica
		}
		c := rg.signedInBrowser()
		started, release := rg.holdPath("/token")
		rg.clk.Advance(6 * time.Minute) // past the ID token's expiry
		if code := rg.leaveDuringRenewal(c, started); code != http.StatusBadGateway {
			t.Fatalf("request whose client left: %d, want 502", code)
		}
		old := rg.sessionRequest(context.Background(), c, "/page").Header.Get("Cookie")
		close(release)
		rg.waitRenewals()
		rg.setHook(nil)

		rg.clk.Advance(3 * time.Minute) // the browser comes back later
		if st, body := page(c, next); st != http.StatusOK || body != "ok "+rigUser.Subject {
			t.Fatalf("the browser's next request, with the cookie from before the renewal: %d %q; want 200 (the renewed session)", st, body)
		}
		if n := rg.idp.Reused(); n != 0 {
			t.Errorf("the provider saw %d refresh tokens used again, want none", n)
		}

		// A copy of the old cookie, after refreshGrace: not renewed.
		rg.clk.Advance(refreshGrace + time.Second)
		if code := rg.statusWithCookie(old); code != http.StatusUnauthorized {
			t.Errorf("a copy of the old cookie %v after the browser got the renewed session: %d, want 401", refreshGrace, code)
		}
	}
	t.Run("alone", func(t *testing.T) { run(t, nil, nil) })
	sharedStores(t, run)
}

// TestRenewalLeaseOfVanishedReplica: a renewal leased by a replica that
// stopped before it finished holds the others back until its lease ends
// (they wait, the session is kept, the provider is not asked), then the
// next gateway renews the session itself.
func TestRenewalLeaseOfVanishedReplica(t *testing.T) {
	sharedStores(t, func(t *testing.T, a, b SignOutStore) {
		rg := rotatingRig(t)
		rg.svc.UseSignOutStore(a)
		c := rg.signedInBrowser()
		rg.clk.Advance(6 * time.Minute) // past the ID token's expiry
		ss, why := rg.svc.openSession(rg.sessionRequest(context.Background(), c, "/page"))
		if ss == nil {
			t.Fatalf("the browser's session does not open: %s", why)
		}
		now := rg.clk.Now()
		if _, _, ok, err := b.(RefreshStore).ClaimRefresh(context.Background(), renewalID(ss), "vanished", now.Add(refreshLease), now); !ok || err != nil {
			t.Fatalf("the vanished replica's claim: %v, %v", ok, err)
		}
		tokens := rg.hits["/token"].Load()
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		rec := httptest.NewRecorder()
		rg.serve(rec, rg.sessionRequest(ctx, c, "/page"))
		if rec.Code != http.StatusBadGateway || len(rec.Result().Cookies()) != 0 {
			t.Errorf("while another replica holds the renewal: %d %v %s; want 502, the session kept", rec.Code, rec.Header(), rec.Body)
		}
		if n := rg.hits["/token"].Load() - tokens; n != 0 {
			t.Errorf("%d token requests while another replica holds the renewal, want none", n)
		}
		rg.clk.Advance(refreshLease + refreshClockSkew) // the lease ends
		rg.waitRenewals()
		if st, body := page(c, rg.gwTS.URL); st != http.StatusOK || body != "ok "+rigUser.Subject {
			t.Errorf("after the lease ended: %d %q; want 200", st, body)
		}
		if n := rg.hits["/token"].Load() - tokens; n != 1 {
			t.Errorf("%d token requests after the lease ended, want 1", n)
		}
	})
}

// brokenRefreshStore is a RefreshStore whose database does not answer.
type brokenRefreshStore struct{}

func (brokenRefreshStore) ClaimRefresh(context.Context, string, string, time.Time, time.Time) (string, time.Time, bool, error) {
	return "", time.Time{}, false, errors.New("connection refused")
}

func (brokenRefreshStore) FinishRefresh(context.Context, string, string, string, time.Time, time.Time) error {
	return errors.New("connection refused")
}

func (brokenRefreshStore) KeepRefresh(context.Context, string, time.Time) error {
	return errors.New("connection refused")
}

func (brokenRefreshStore) DropRefresh(context.Context, string) (string, error) {
	return "", errors.New("connection refused")
}

// TestRenewalWithoutStore: a store that does not answer does not cost the
// session: the gateway renews it alone, and says so in its log.
func TestRenewalWithoutStore(t *testing.T) {
	rg := rotatingRig(t)
	rg.svc.UseRefreshStore(brokenRefreshStore{})
	c := rg.signedInBrowser()
	rg.clk.Advance(6 * time.Minute)
	if st, body := page(c, rg.gwTS.URL); st != http.StatusOK {
		t.Errorf("renewal while the store does not answer: %d %q; want 200", st, body)
	}
	if n := rg.logs.FilterMessageSnippet("the store does not answer").Len(); n != 1 {
		t.Errorf("%d log lines about the store, want 1", n)
	}
}
