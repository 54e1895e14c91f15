package preauth

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/store"
)

// Renewals shared through a store that misbehaves, and replicas whose
// clocks differ.

// replicaStore is a replica's store that tells when the replica found the
// renewal leased by another gateway (held), can fail one ClaimRefresh
// (failClaim: its number, from 1) and the first failFinish FinishRefresh
// calls, and can hold FinishRefresh until release is closed.
type replicaStore struct {
	*store.DB
	held       chan struct{} // gets a value at each claim that found the lease held
	failClaim  int32
	claims     atomic.Int32
	failFinish atomic.Int32
	finishing  chan struct{} // when not nil, gets a value as FinishRefresh starts
	release    chan struct{} // when not nil, FinishRefresh waits for it to close
}

func newReplicaStore(st SignOutStore) *replicaStore {
	return &replicaStore{DB: st.(*store.DB), held: make(chan struct{}, 1)}
}

func (f *replicaStore) ClaimRefresh(ctx context.Context, id, owner string, lease, now time.Time) (string, time.Time, bool, error) {
	if f.claims.Add(1) == f.failClaim {
		return "", time.Time{}, false, errors.New("connection reset by peer")
	}
	res, kept, claimed, err := f.DB.ClaimRefresh(ctx, id, owner, lease, now)
	if err == nil && res == "" && !claimed {
		select {
		case f.held <- struct{}{}:
		default:
		}
	}
	return res, kept, claimed, err
}

func (f *replicaStore) FinishRefresh(ctx context.Context, id, owner, result string, keep, now time.Time) error {
	if f.finishing != nil {
		f.finishing <- struct{}{}
		<-f.release
	}
	if f.failFinish.Add(-1) >= 0 {
		return errors.New("deadlock detected")
	}
	return f.DB.FinishRefresh(ctx, id, owner, result, keep, now)
}

// renewAtBoth has the browser's session renewed by the rig's gateway
// (held at the provider) and asked of the replica other meanwhile, whose
// store is st; it checks that both keep the session with one token
// request, and that the session renews again afterwards.
func renewAtBoth(t *testing.T, rg *idpRig, other string, st *replicaStore) {
	t.Helper()
	c := rg.signedInBrowser()
	// The provider holds token requests until release is closed; started
	// gets a value as each arrives (never blocking the provider).
	started, release := make(chan struct{}, 4), make(chan struct{})
	rg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/token" {
			select {
			case started <- struct{}{}:
			default:
			}
			<-release
		}
		return false
	})
	rg.clk.Advance(6 * time.Minute) // past the ID token's expiry
	tokens := rg.hits["/token"].Load()
	answers := make(chan string, 2)
	ask := func(name, base string) {
		if code, body := page(c, base); code != http.StatusOK {
			answers <- name + ": " + http.StatusText(code) + " " + body
			return
		}
		answers <- ""
	}
	go ask("first gateway", rg.gwTS.URL)
	<-started
	go ask("replica", other)
	select {
	case <-st.held: // it waits for the first gateway's renewal
	case <-started:
		t.Error("the replica renewed the session at the provider while the first gateway was renewing it")
	}
	close(release)
	for range 2 {
		if a := <-answers; a != "" {
			t.Errorf("%s; want 200 (the user keeps the session)", a)
		}
	}
	rg.waitRenewals()
	if n := rg.hits["/token"].Load() - tokens; n != 1 {
		t.Errorf("%d token requests for one renewal, want 1", n)
	}
	if n := rg.idp.Reused(); n != 0 {
		t.Errorf("the provider saw %d refresh tokens used again, want none", n)
	}
	rg.setHook(nil)
	rg.clk.Advance(6 * time.Minute)
	if code, body := page(c, rg.gwTS.URL); code != http.StatusOK {
		t.Errorf("the next renewal: %d %q; want 200", code, body)
	}
}

// TestRenewalSharedByReplicasWithSkewedClocks: a replica whose clock is
// 25 s ahead (clocks may differ by up to a minute) still finds the other
// replica's lease held, and waits for its renewal. It used to find the
// 20 s lease ended and renew the session too, and the provider's reuse
// detection sent the user to sign in.
func TestRenewalSharedByReplicasWithSkewedClocks(t *testing.T) {
	sharedStores(t, func(t *testing.T, a, b SignOutStore) {
		rg := rotatingRig(t)
		rg.svc.UseSignOutStore(a)
		st := newReplicaStore(b)
		renewAtBoth(t, rg, rg.replicaAhead(st, 25*time.Second), st)
	})
}

// TestRenewalWaitsThroughStoreBlip: a replica waiting for another one's
// renewal whose store fails one look goes on waiting. It used to renew
// the session alone at once, beside the other replica's renewal.
func TestRenewalWaitsThroughStoreBlip(t *testing.T) {
	sharedStores(t, func(t *testing.T, a, b SignOutStore) {
		rg := rotatingRig(t)
		rg.svc.UseSignOutStore(a)
		st := newReplicaStore(b)
		st.failClaim = 2 // the first look finds the lease held, the second fails
		renewAtBoth(t, rg, rg.replica(st), st)
	})
}

// TestRenewalNotRecordedServedHere: a renewal the store failed to record
// is still handed to this gateway's requests with the old cookie. The
// next one used to take its own lease again and renew with the used
// refresh token: the provider refused it and revoked the new one too.
func TestRenewalNotRecordedServedHere(t *testing.T) {
	sharedStores(t, func(t *testing.T, a, _ SignOutStore) {
		rg := rotatingRig(t)
		st := newReplicaStore(a)
		st.failFinish.Store(1)
		rg.svc.UseSignOutStore(st)
		c := rg.signedInBrowser()
		rg.clk.Advance(6 * time.Minute)
		inFlight := rg.sessionRequest(context.Background(), c, "/page") // carries the old cookie
		inFlight.Header.Set("Accept", "application/json")
		tokens := rg.hits["/token"].Load()
		if code, body := page(c, rg.gwTS.URL); code != http.StatusOK {
			t.Fatalf("the renewal: %d %q", code, body)
		}
		rec := httptest.NewRecorder()
		rg.serve(rec, inFlight)
		if rec.Code != http.StatusOK {
			t.Errorf("a request with the old cookie after a renewal the store did not record: %d %q; want 200", rec.Code, rec.Body)
		}
		if n := rg.hits["/token"].Load() - tokens; n != 1 {
			t.Errorf("%d token requests, want 1", n)
		}
		if n := rg.idp.Reused(); n != 0 {
			t.Errorf("the provider saw %d refresh tokens used again, want none", n)
		}
	})
}

// TestRenewalJoinedLateKeptForGraceOnly: a request that joins a renewal
// whose own client left, after the renewal found nobody waiting, brings
// the browser the renewed session; a copy of the old cookie then gets it
// for refreshGrace only. It used to be kept until the session's end.
func TestRenewalJoinedLateKeptForGraceOnly(t *testing.T) {
	sharedStores(t, func(t *testing.T, a, _ SignOutStore) {
		rg := rotatingRig(t)
		st := newReplicaStore(a)
		st.finishing, st.release = make(chan struct{}, 1), make(chan struct{})
		rg.svc.UseSignOutStore(st)
		c := rg.signedInBrowser()
		rg.clk.Advance(6 * time.Minute)
		old := rg.sessionRequest(context.Background(), c, "/page").Header.Get("Cookie")
		started, release := rg.holdPath("/token")
		rg.leaveDuringRenewal(c, started)
		close(release)
		<-st.finishing // the renewal found nobody waiting, and records its result
		answer := make(chan int, 1)
		go func() { code, _ := page(c, rg.gwTS.URL); answer <- code }()
		rg.waitWaiter()
		close(st.release)
		if code := <-answer; code != http.StatusOK {
			t.Fatalf("the browser's request that joined the renewal: %d, want 200", code)
		}
		rg.waitRenewals()
		rg.setHook(nil)
		rg.clk.Advance(refreshGrace + time.Second)
		if code := rg.statusWithCookie(old); code != http.StatusUnauthorized {
			t.Errorf("a copy of the old cookie %v after the browser got the renewed session: %d, want 401", refreshGrace+time.Second, code)
		}
	})
}

// TestSignOutRevokesKeptRenewal: signing out with the old cookie of a
// session whose renewal was kept for it (the browser missed it) revokes
// the renewed session's refresh token and deletes the kept renewal. Only
// the used old token used to be revoked: the live one stayed valid at the
// provider, and sealed in the store until the session's end.
func TestSignOutRevokesKeptRenewal(t *testing.T) {
	sharedStores(t, func(t *testing.T, a, _ SignOutStore) {
		rg := rotatingRig(t)
		rg.svc.UseSignOutStore(a)
		c := rg.signedInBrowser()
		started, release := rg.holdPath("/token")
		rg.clk.Advance(6 * time.Minute)
		old, _ := rg.svc.openSession(rg.sessionRequest(context.Background(), c, "/page"))
		rg.leaveDuringRenewal(c, started)
		close(release)
		rg.waitRenewals()
		rg.setHook(nil)
		now := rg.clk.Now()
		res, _, _, err := a.(RefreshStore).ClaimRefresh(context.Background(), renewalID(old), "test", now.Add(time.Second), now)
		var renewed session
		if err != nil || rg.svc.sealer.open(renewalPurpose(renewalID(old)), res, &renewed) != nil {
			t.Fatalf("the renewal kept for the browser: %q, %v", res, err)
		}

		req := rg.sessionRequest(context.Background(), c, logoutPath)
		req.Method = http.MethodPost
		req.Header.Set("Origin", rg.gwTS.URL)
		rg.serve(httptest.NewRecorder(), req)

		form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {renewed.Token}}
		tr, _ := http.NewRequest(http.MethodPost, rg.idpTS.URL+"/token", strings.NewReader(form.Encode()))
		tr.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		tr.SetBasicAuth(rigClient, "s")
		tres, err := http.DefaultClient.Do(tr)
		if err != nil {
			t.Fatal(err)
		}
		tres.Body.Close()
		if tres.StatusCode == http.StatusOK {
			t.Error("the renewed session's refresh token still works at the provider after sign-out; want it revoked")
		}
		now = rg.clk.Now()
		if res, _, _, err := a.(RefreshStore).ClaimRefresh(context.Background(), renewalID(old), "test2", now.Add(time.Second), now); err != nil || res != "" {
			t.Errorf("after sign-out the store still keeps the renewed session (%d bytes, %v); want it deleted", len(res), err)
		}
	})
}
