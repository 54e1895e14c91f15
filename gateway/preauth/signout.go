package preauth

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Sign-out ends a session for good, not only in the browser that asked:
// the session cookie is stateless, so a copy of it (another browser
// profile, a stolen cookie) would otherwise work on until the session's
// end. Two things stop it:
//
//   - This gateway remembers the session's ID until the session would have
//     ended, and refuses the ID from then on (signedOut). With a
//     SignOutStore (the gateway's store) the ID is recorded there too, and
//     the other gateways on the store, or this one after a restart, read
//     it back (SyncSignOuts).
//   - The session's refresh token is revoked at the provider (RFC 7009)
//     when the provider has a revocation endpoint, so every gateway that
//     shares the cookie key refuses the copy at its next refresh, at most
//     one ID token lifetime later.

// SignOutStore keeps the signed-out sessions where every gateway on it,
// and a restarted one, reads them (the gateway's store implements it; see
// UseSignOutStore). Without one the list lives in this process only.
type SignOutStore interface {
	AddSignOut(ctx context.Context, id string, expires, now time.Time) error
	SignOuts(ctx context.Context, now time.Time) (map[string]time.Time, error)
}

// UseSignOutStore makes sign-outs go to st as well, and SyncSignOuts read
// them back. When st is a RefreshStore too (the gateway's store is), the
// renewals of sessions go through it as well (UseRefreshStore). Call it
// before the service is used.
func (s *Service) UseSignOutStore(st SignOutStore) {
	s.signOutStore = st
	if rs, ok := st.(RefreshStore); ok {
		s.UseRefreshStore(rs)
	}
}

// SyncSignOuts adds the signed-out sessions of the store (those of other
// gateways, and those from before a restart) to this gateway's list. The
// gateway calls it at start and then every minute.
func (s *Service) SyncSignOuts(ctx context.Context) error {
	if s.signOutStore == nil {
		return nil
	}
	now := s.now()
	ids, err := s.signOutStore.SignOuts(ctx, now)
	if err != nil {
		return fmt.Errorf("reading signed-out sessions: %w", err)
	}
	for id, end := range ids {
		if !s.signedOut.has(id) {
			s.signedOut.add(id, end.Unix(), now.Unix())
		}
	}
	return nil
}

// signOutTimeout bounds the revocation call during a sign-out: the user
// waits for it.
const signOutTimeout = 3 * time.Second

// signedOutMin is the size below which the list is not pruned.
const signedOutMin = 1024

// signedOut is the list of sessions signed out on this gateway: session ID
// → the session's end (Unix seconds). An entry is useless once its session
// has ended, so the list holds the sessions signed out within one session
// lifetime. It is pruned of those when it has doubled since the last
// pruning, which keeps adding amortised O(1).
type signedOut struct {
	mu    sync.Mutex
	ids   map[string]int64 // guarded by mu
	prune int              // size at which to prune next; guarded by mu
}

func (l *signedOut) add(id string, expires, now int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ids == nil {
		l.ids = map[string]int64{}
	}
	if len(l.ids) >= max(l.prune, signedOutMin) {
		for k, x := range l.ids {
			if x <= now {
				delete(l.ids, k)
			}
		}
		l.prune = 2 * len(l.ids)
	}
	l.ids[id] = expires
}

func (l *signedOut) has(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.ids[id]
	return ok
}

// endSession makes the session in r's cookie unusable: its ID is refused
// from now on, and its refresh token is revoked at the provider, even if
// the browser goes away meanwhile. It returns the session's provider, or
// nil when there was no session.
func (s *Service) endSession(r *http.Request) *provider {
	// Under cookie_domain and TLS, the session r's host has bound, not a
	// copy another host planted (see cookiebind.go).
	if open, _ := s.openSession(r); open != nil {
		return s.end(r, *open)
	}
	if !s.bindsSessions(r) {
		return nil
	}
	// A host the session was not bound to yet (a sign-out link on another
	// app): end every session r carries, since the one that is the user's
	// is not known here; ending a planted one harms only its owner.
	bs, _ := s.readBound(r)
	var first *provider
	for _, ss := range bs.others {
		if p := s.end(r, *ss); first == nil {
			first = p
		}
	}
	return first
}

// end is endSession for the session ss.
func (s *Service) end(r *http.Request, ss session) *provider {
	if ss.ID != "" {
		now := s.now()
		s.signedOut.add(ss.ID, ss.Expires, now.Unix())
		if st := s.signOutStore; st != nil {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), signOutTimeout)
			err := st.AddSignOut(ctx, ss.ID, time.Unix(ss.Expires, 0), now)
			cancel()
			if err != nil {
				s.log.Warn("sign-out: not recorded in the store; other gateways refuse a copy of the session cookie "+
					"only from its next refresh", zap.String("subject", ss.Subject), zap.Error(err))
			}
		}
	}
	p := s.providers[ss.Provider]
	token := "none" // what became of the refresh token
	live := ""      // the session's newest refresh token
	if ss.Token != "" {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), signOutTimeout)
		live = s.dropRenewals(ctx, &ss)
		cancel()
	}
	if live != "" && p != nil {
		done, err := p.revoke(context.WithoutCancel(r.Context()), live)
		switch {
		case err != nil:
			token = "not revoked"
			s.log.Warn("sign-out: the refresh token could not be revoked at the provider; a copy of the session cookie "+
				"keeps working on other gateways that share the cookie key until the session ends",
				zap.String("provider", p.cfg.Name), zap.String("subject", ss.Subject), zap.Error(err))
		case done:
			token = "revoked"
		default:
			token = "provider cannot revoke"
		}
	}
	s.log.Info("signed out", zap.String("provider", ss.Provider), zap.String("subject", ss.Subject),
		zap.String("refresh_token", token))
	return p
}

// logoutURL is the provider's end-session endpoint (OpenID Connect
// RP-Initiated Logout) with this client's ID, for the signed-out page to
// offer, or "" when the provider has none or cannot be asked now.
func (p *provider) logoutURL(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, signOutTimeout)
	defer cancel()
	op, err := p.discover(ctx)
	if err != nil {
		return ""
	}
	var meta struct {
		Endpoint string `json:"end_session_endpoint"`
	}
	if err := op.Claims(&meta); err != nil {
		return ""
	}
	u, err := url.Parse(meta.Endpoint)
	if err != nil || u.Scheme != "https" && u.Scheme != "http" || u.Host == "" {
		return ""
	}
	q := u.Query()
	q.Set("client_id", p.cfg.ClientID)
	u.RawQuery = q.Encode()
	return u.String()
}

// revoke revokes a refresh token at the provider's revocation endpoint
// (RFC 7009) and reports whether it did. A provider without one (Microsoft
// Entra ID has none) is not an error: its refresh tokens stay valid until
// they expire.
func (p *provider) revoke(ctx context.Context, token string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, signOutTimeout)
	defer cancel()
	op, err := p.discover(ctx)
	if err != nil {
		return false, err
	}
	var meta struct {
		Endpoint string `json:"revocation_endpoint"`
	}
	if err := op.Claims(&meta); err != nil || meta.Endpoint == "" {
		return false, nil
	}
	form := url.Values{"token": {token}, "token_type_hint": {"refresh_token"}}
	if p.cfg.ClientSecret == "" {
		form.Set("client_id", p.cfg.ClientID)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, meta.Endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return false, fmt.Errorf("revocation endpoint %q: %w", meta.Endpoint, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if p.cfg.ClientSecret != "" {
		// RFC 6749 §2.3.1: both are form-encoded before Basic.
		req.SetBasicAuth(url.QueryEscape(p.cfg.ClientID), url.QueryEscape(p.cfg.ClientSecret))
	}
	res, err := p.svc.client.Do(req)
	if err != nil {
		return false, err
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 512))
	if res.StatusCode != http.StatusOK {
		return false, fmt.Errorf("revocation endpoint answered %s: %s", res.Status, strings.TrimSpace(string(body)))
	}
	return true, nil
}
