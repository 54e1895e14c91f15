package preauth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/oauth2"

	"github.com/sallyport/sallyport/internal/store"
)

// Session renewal. Once the ID token has expired, the next request
// renews the session with its refresh token (refreshSession). Providers
// that rotate refresh tokens and detect reuse (Okta, Auth0, Keycloak's
// "revoke refresh token") accept each refresh token once, while a
// browser goes on sending the old cookie until a response brings it the
// new one: its requests in flight, and those after a renewal whose own
// client left before it ended, which never brought the browser the new
// cookie. So a session is renewed once, and the renewed session is handed
// to every request that carries the old cookie:
//
//   - In one gateway, the requests of one session at the same moment
//     share one renewal (refresher).
//   - Gateways on one store (replicas on PostgreSQL; one gateway on
//     SQLite, across restarts) take turns through a RefreshStore: the
//     first takes a lease on the renewal (refreshLease), the others wait
//     for its result, and every gateway finds the result there. The
//     result is the renewed session sealed with the cookie key, as in a
//     cookie: the store never holds a refresh token in the clear, and
//     the renewal is named by a hash (renewalID).
//   - A result is kept for refreshGrace once a request whose client was
//     still waiting took it (it brings the browser the new cookie; the
//     browser's requests already in flight with the old cookie get the
//     same), and until the session's end while no such request took it
//     (every client left: the browser still has only the old cookie). A
//     copy of the old cookie therefore yields the renewed session only
//     within refreshGrace of the browser getting the new one, or in place
//     of a browser that never got it; after that, its refresh token is
//     the provider's to refuse. Without a store the results live in this
//     process (memRefreshes).

const (
	// refreshLease bounds one gateway's renewal of a session: the others
	// wait that long for its result, then renew it themselves (the
	// gateway stopped mid-renewal). It is longer than a provider call
	// (providerTimeout).
	refreshLease = 2 * providerTimeout
	// refreshClockSkew is how far the clocks of the gateways on one store
	// may differ (as for assertions): a lease is recorded that much
	// longer, so that a gateway whose clock is ahead does not find it
	// ended while its holder still renews.
	refreshClockSkew = time.Minute
	// refreshGrace is how long the renewed session is handed to requests
	// that still carry the old cookie once a request took it back to the
	// browser.
	refreshGrace = time.Minute
	// refreshPoll is how often a gateway waiting for another one's
	// renewal looks for its result.
	refreshPoll = 25 * time.Millisecond
	// maxRefreshPoll bounds the interval between looks, which doubles
	// from refreshPoll: a long wait costs the store a few queries, not
	// 40 a second.
	maxRefreshPoll = 400 * time.Millisecond
	// refreshCallTimeout bounds each call to the RefreshStore: a user's
	// request waits on them, and a database that does not answer (packets
	// dropped) held one claim for the whole lease, or a finish for
	// providerTimeout, instead of the store's own 10 s.
	refreshCallTimeout = 3 * time.Second
	// maxRenewals bounds the renewals one request makes: a result kept
	// for a browser that never got it may itself be due by the time the
	// browser comes back (its refresh token is the one to use then).
	maxRenewals = 3
)

// RefreshStore coordinates the renewals of sessions between the
// gateways on it (the gateway's store implements it; see
// UseRefreshStore). id names one renewal (see renewalID), owner one
// gateway; times are the caller's clock.
type RefreshStore interface {
	// ClaimRefresh returns the result of renewal id and until when it is
	// kept when there is one; otherwise it takes the lease for owner until
	// lease, unless another owner holds one that has not ended by now, and
	// reports whether owner holds it.
	ClaimRefresh(ctx context.Context, id, owner string, lease, now time.Time) (result string, kept time.Time, claimed bool, err error)
	// FinishRefresh ends owner's lease: it keeps result until keep, or,
	// when result is empty, frees the renewal for the next claim.
	FinishRefresh(ctx context.Context, id, owner, result string, keep, now time.Time) error
	// KeepRefresh keeps the result of renewal id no later than until.
	KeepRefresh(ctx context.Context, id string, until time.Time) error
	// DropRefresh deletes the result of renewal id and returns it (""
	// when there is none): its session was signed out.
	DropRefresh(ctx context.Context, id string) (string, error)
}

// UseRefreshStore makes the renewals of sessions go through st, shared
// with every gateway on it (see above). Call it before the service is
// used. UseSignOutStore calls it when its store is a RefreshStore too.
func (s *Service) UseRefreshStore(st RefreshStore) { s.refreshStore = st }

func (s *Service) refreshes() RefreshStore {
	if s.refreshStore != nil {
		return s.refreshStore
	}
	return &s.memRefreshes
}

// newOwner names this gateway in the RefreshStore.
func newOwner() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// renewalID names the renewal of ss: a hash of its refresh token and its
// due time (a provider that does not rotate refresh tokens keeps the
// token, and each renewal of it is another).
func renewalID(ss *session) string {
	sum := sha256.Sum256([]byte("sallyport session renewal\x00" + ss.Token + "\x00" + strconv.FormatInt(ss.Refresh, 10)))
	return hex.EncodeToString(sum[:])
}

// renewalPurpose is the sealing purpose of renewal id's result: a result
// opens only as the renewal it was made for.
func renewalPurpose(id string) string { return "renewal " + id }

// refreshSession renews ss with its refresh token. A provider that cannot
// be reached gives an *Error (502); a refused refresh a plain error (sign in
// again). The renewal runs on its own (see refresher); r waits for it as
// long as its client does.
func (s *Service) refreshSession(w http.ResponseWriter, r *http.Request, p *provider, ss *session) (*session, error) {
	if ss.Token == "" {
		return ss, nil
	}
	op, err := p.discover(r.Context())
	if err != nil {
		return nil, unreachable(err)
	}
	var keptLong []string // renewals kept past refreshGrace, which this request brings the browser
	for range maxRenewals {
		cur := ss
		var stored bool
		var kept time.Time
		id := renewalID(cur)
		ss, stored, kept, err = s.refresh.do(r.Context(), id, func(waiting func() bool) (*session, bool, time.Time, error) {
			return s.renew(p, op, cur, waiting)
		})
		if err != nil {
			return nil, err
		}
		if kept.After(s.now().Add(refreshGrace)) {
			keptLong = append(keptLong, id)
		}
		// A result made earlier may be due itself: renew it in turn.
		if !stored || ss.Token == "" || ss.Refresh == 0 || s.now().Unix() < ss.Refresh {
			break
		}
	}
	// Copies of the old cookie get the result for refreshGrace from now,
	// also when the renewal decided, before this request joined it, that
	// no request would bring it to the browser.
	for _, id := range keptLong {
		s.keepRenewal(id, s.now().Add(refreshGrace))
	}
	return s.writeSession(w, r, ss)
}

// renew renews ss once across the gateways on the RefreshStore: it
// returns the result another request made (stored), or waits for the
// gateway renewing it, or renews it at the provider itself. waiting
// reports whether a request still waits for the result.
func (s *Service) renew(p *provider, op *discovered, ss *session, waiting func() bool) (*session, bool, time.Time, error) {
	st, id := s.refreshes(), renewalID(ss)
	ctx, cancel := context.WithTimeout(context.Background(), refreshLease)
	defer cancel()
	answered := false  // a claim found the lease held by another gateway
	var claimErr error // the last claim's error
	poll := refreshPoll
claim:
	for {
		now := s.now()
		if s.refreshStore != nil {
			// A renewal of this gateway's that the store did not record.
			if res, kept := s.memRefreshes.result(id, now); res != "" {
				var n session
				if err := s.sealer.open(renewalPurpose(id), res, &n); err == nil {
					return &n, true, kept, nil
				}
			}
		}
		// The lease is recorded refreshClockSkew longer than it lasts, so
		// that a gateway whose clock is ahead finds it held all along.
		cctx, ccancel := context.WithTimeout(ctx, refreshCallTimeout)
		res, kept, claimed, err := st.ClaimRefresh(cctx, id, s.owner, now.Add(refreshLease+refreshClockSkew), now)
		ccancel()
		claimErr = err
		switch {
		case err != nil && !answered:
			// Renew alone, as before renewals were shared: the session
			// is kept unless the provider refuses a second renewal.
			s.log.Warn("session renewal: the store does not answer; renewing without the other gateways "+
				"(a provider that rotates refresh tokens may refuse one of two renewals at once)",
				zap.String("provider", p.cfg.Name), zap.Error(err))
			n, err := s.renewAtProvider(p, op, ss)
			return n, false, time.Time{}, err
		case err != nil:
			// Another gateway holds the lease: look again; renewing
			// beside it would use the refresh token twice.
			s.log.Debug("session renewal: the store does not answer; waiting for the other gateway's renewal", zap.Error(err))
		case res != "":
			var n session
			if err := s.sealer.open(renewalPurpose(id), res, &n); err != nil {
				return nil, false, time.Time{}, fmt.Errorf("the renewed session kept in the store does not open (%w): sign in again", err)
			}
			return &n, true, kept, nil
		case claimed:
			break claim
		default:
			answered = true
		}
		t := time.NewTimer(poll)
		poll = min(2*poll, maxRefreshPoll)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			if store.Unavailable(claimErr) {
				return nil, false, time.Time{}, storeDown(fmt.Errorf("another gateway was renewing this session when "+
					"the store stopped answering, and the store did not answer until the lease ended (%s): %w", refreshLease, claimErr))
			}
			return nil, false, time.Time{}, unreachable(fmt.Errorf("another gateway is renewing this session and did not finish within %s; "+
				"it is renewed again at the next request", refreshLease))
		}
	}
	n, err := s.renewAtProvider(p, op, ss)
	result, keep := "", time.Time{}
	if err == nil {
		// Until the session's end for a browser that has only the old
		// cookie; refreshGrace once it gets the new one.
		keep = time.Unix(ss.Expires, 0)
		if waiting() {
			keep = s.now().Add(refreshGrace)
		}
		var serr error
		if result, serr = s.sealer.seal(renewalPurpose(id), n); serr != nil {
			result = "" // the lease is freed; this request has the result
		}
	}
	fctx, fcancel := context.WithTimeout(context.Background(), refreshCallTimeout)
	defer fcancel()
	if ferr := st.FinishRefresh(fctx, id, s.owner, result, keep, s.now()); ferr != nil {
		if result != "" && s.refreshStore != nil {
			// This gateway at least hands it to the old cookie.
			s.memRefreshes.put(id, s.owner, result, keep, s.now())
		}
		s.log.Warn("session renewal: not recorded in the store; this gateway hands the renewed session to the old cookie, "+
			"other gateways renew it again when its lease ends, and a provider that rotates refresh tokens refuses that",
			zap.String("provider", p.cfg.Name), zap.Error(ferr))
	}
	return n, false, keep, err
}

// storeDown is the user's error when a session could not be renewed
// because the gateway's database does not answer (store.Unavailable): not
// the sign-in provider's fault, nor another gateway's.
func storeDown(err error) *Error {
	return &Error{Code: CodeProviderUnreachable, Status: http.StatusServiceUnavailable, Err: err,
		Msg: "The gateway's database does not answer, so your sign-in session could not be renewed. " +
			"Try again in a moment; if it persists, tell the administrator."}
}

// keepRenewal keeps the result of renewal id no later than until.
func (s *Service) keepRenewal(id string, until time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), refreshCallTimeout)
	defer cancel()
	if err := s.refreshes().KeepRefresh(ctx, id, until); err != nil {
		s.log.Warn("session renewal: the store does not answer; a copy of the old cookie gets the renewed session "+
			"until the session's end", zap.Error(err))
	}
	_ = s.memRefreshes.KeepRefresh(ctx, id, until)
}

// renewAtProvider renews ss at the provider p.
func (s *Service) renewAtProvider(p *provider, op *discovered, ss *session) (*session, error) {
	if err := p.unansweredRefresh(); err != nil {
		return nil, unreachable(err)
	}
	ctx, cancel := s.ctx(context.Background())
	defer cancel()
	tok, err := op.oauth.TokenSource(ctx, &oauth2.Token{RefreshToken: ss.Token, Expiry: time.Unix(1, 0)}).Token()
	if err != nil {
		if endpointGone(err) {
			// Not the provider's word on the session: its token
			// endpoint moved, say. The session is kept.
			p.rediscover(err)
			return nil, unreachable(err)
		}
		if refused(err) {
			return nil, err
		}
		if !answered(err) {
			p.refreshUnanswered(err)
		}
		return nil, unreachable(err)
	}
	n := *ss
	if rt := tok.RefreshToken; rt != "" {
		n.Token = rt
	}
	n.Refresh = tok.Expiry.Unix()
	if raw, ok := tok.Extra("id_token").(string); ok && raw != "" {
		idt, err := p.verify(ctx, op, raw, false)
		if keysUnavailable(err) {
			return nil, unreachable(err)
		}
		if err != nil {
			return nil, err
		}
		if idt.Subject != ss.Subject {
			return nil, errors.New("refreshed ID token is for another subject")
		}
		id, err := p.identityFrom(idt, "session")
		if err != nil {
			return nil, err
		}
		n.Email, n.Name, n.Groups = id.Email, id.Name, id.Groups
		n.Refresh = idt.Expiry.Unix()
	}
	if tok.Expiry.IsZero() && n.Refresh <= s.now().Unix() {
		n.Refresh = s.now().Add(time.Hour).Unix()
	}
	return &n, nil
}

// refresher makes concurrent renewals of one session in this gateway
// into one call. The call runs in a goroutine of its own, bounded by
// refreshLease: its callers wait for it only as long as their clients do,
// and it tells the call whether one still waits.
type refresher struct {
	mu   sync.Mutex
	wait map[string]*refreshCall // guarded by mu
}

// refreshCall is a renewal in flight. ss, stored and err are written
// before done is closed and read after.
type refreshCall struct {
	done    chan struct{}
	ss      *session
	stored  bool
	kept    time.Time // until when the store keeps ss for the old cookie
	err     error
	waiters int // callers still waiting; guarded by refresher.mu
}

func (f *refresher) do(ctx context.Context, id string, fn func(waiting func() bool) (*session, bool, time.Time, error)) (*session, bool, time.Time, error) {
	f.mu.Lock()
	if f.wait == nil {
		f.wait = map[string]*refreshCall{}
	}
	c, ok := f.wait[id]
	if !ok {
		c = &refreshCall{done: make(chan struct{})}
		f.wait[id] = c
		go f.run(id, c, fn)
	}
	c.waiters++
	f.mu.Unlock()
	select {
	case <-c.done:
		return c.ss, c.stored, c.kept, c.err
	case <-ctx.Done():
		f.mu.Lock()
		c.waiters--
		f.mu.Unlock()
		// A *Error, so that the session is kept; its client is gone.
		return nil, false, time.Time{}, unreachable(fmt.Errorf("waiting for the provider to refresh the session: %w", context.Cause(ctx)))
	}
}

// run makes the call c.
func (f *refresher) run(id string, c *refreshCall, fn func(waiting func() bool) (*session, bool, time.Time, error)) {
	c.ss, c.stored, c.kept, c.err = fn(func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return c.waiters > 0
	})
	f.mu.Lock()
	delete(f.wait, id)
	f.mu.Unlock()
	close(c.done)
}

// memRefreshesMin is the size below which memRefreshes is not pruned.
const memRefreshesMin = 1024

// memRefreshes is the RefreshStore of a gateway without one: its
// renewals, in this process. It is pruned of ended renewals when it has
// doubled since the last pruning.
type memRefreshes struct {
	mu    sync.Mutex
	m     map[string]memRefresh // guarded by mu
	prune int                   // size at which to prune next; guarded by mu
}

type memRefresh struct {
	owner, result string
	expires       time.Time
}

func (m *memRefreshes) ClaimRefresh(_ context.Context, id, owner string, lease, now time.Time) (string, time.Time, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil {
		m.m = map[string]memRefresh{}
	}
	e, ok := m.m[id]
	if ok && e.expires.After(now) {
		if e.result != "" {
			return e.result, e.expires, false, nil
		}
		return "", time.Time{}, e.owner == owner, nil
	}
	m.m[id] = memRefresh{owner: owner, expires: lease}
	return "", time.Time{}, true, nil
}

func (m *memRefreshes) FinishRefresh(_ context.Context, id, owner, result string, keep, now time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pruneLocked(now)
	e, ok := m.m[id]
	if !ok || e.owner != owner || e.result != "" {
		return nil
	}
	if result == "" {
		delete(m.m, id)
		return nil
	}
	m.m[id] = memRefresh{owner: owner, result: result, expires: keep}
	return nil
}

func (m *memRefreshes) KeepRefresh(_ context.Context, id string, until time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.m[id]; ok && e.result != "" && e.expires.After(until) {
		e.expires = until
		m.m[id] = e
	}
	return nil
}

// result is the result of renewal id kept past now, if any.
func (m *memRefreshes) result(id string, now time.Time) (string, time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.m[id]; ok && e.result != "" && e.expires.After(now) {
		return e.result, e.expires
	}
	return "", time.Time{}
}

// put keeps result of renewal id until keep.
func (m *memRefreshes) put(id, owner, result string, keep, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil {
		m.m = map[string]memRefresh{}
	}
	m.pruneLocked(now)
	m.m[id] = memRefresh{owner: owner, result: result, expires: keep}
}

// pruneLocked deletes the ended renewals when m has doubled since the
// last pruning. m.mu is held.
func (m *memRefreshes) pruneLocked(now time.Time) {
	if len(m.m) >= max(m.prune, memRefreshesMin) {
		for k, e := range m.m {
			if !e.expires.After(now) {
				delete(m.m, k)
			}
		}
		m.prune = 2 * len(m.m)
	}
}

func (m *memRefreshes) DropRefresh(_ context.Context, id string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.m[id]
	if !ok || e.result == "" {
		return "", nil
	}
	delete(m.m, id)
	return e.result, nil
}

// dropRenewals deletes the renewals kept for ss's cookie (a browser that
// missed them has only ss) and returns the newest refresh token of the
// session: the one to revoke at sign-out.
func (s *Service) dropRenewals(ctx context.Context, ss *session) string {
	token := ss.Token
	cur := ss
	for range maxRenewals {
		if cur.Token == "" {
			break
		}
		id := renewalID(cur)
		res, err := s.refreshes().DropRefresh(ctx, id)
		if s.refreshStore != nil {
			if r, _ := s.memRefreshes.DropRefresh(ctx, id); res == "" {
				res = r
			}
		}
		if err != nil {
			s.log.Warn("sign-out: a renewal of the session kept in the store was not deleted; its refresh token is not revoked",
				zap.Error(err))
		}
		var n session
		if res == "" || s.sealer.open(renewalPurpose(id), res, &n) != nil {
			break
		}
		if n.Token != "" {
			token = n.Token
		}
		cur = &n
	}
	return token
}
