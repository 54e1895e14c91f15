package gateway

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/internal/clock"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/tunnel"
)

// A session lives no longer than the client certificate it was opened
// with. certDrainLead before the certificate's NotAfter the gateway stops
// picking the session for new exchanges and sends the agent a Drain; at
// NotAfter it closes the session, whatever is still running on it. An
// agent that renewed in time has moved its sessions to the new certificate
// long before (it renews at two thirds of the lifetime), so only an agent
// that could not renew ever sees this.
const certDrainLead = time.Minute

// retireGrace is how long a session presenting a certificate that a
// renewal replaced may finish its exchanges once a session with the new
// certificate is up. It gets no new exchanges from that moment (the
// agent moves its own sessions within seconds; see agent.Config.RollPause),
// so what the grace keeps alive is what already ran on it: long
// downloads, WebSockets and long polls of users, which an hour lets end
// on their own rather than be cut.
const retireGrace = time.Hour

// until returns a channel that gets the time once the gateway's clock
// reaches t (see clock.Until: a fake clock moved meanwhile does not push
// the wait back).
func (g *Gateway) until(t time.Time) <-chan time.Time {
	if g.cfg.Clock != nil {
		return clock.Until(g.cfg.Clock, t)
	}
	return time.After(t.Sub(g.now()))
}

// waitUntil waits until t on the gateway's clock and reports true, or
// reports false when s ends first.
func (g *Gateway) waitUntil(s tunnel.Session, t time.Time) bool {
	if t.After(g.now()) {
		select {
		case <-g.until(t):
		case <-s.Done():
			return false
		}
	}
	return !isClosed(s.Done())
}

// watchExpiry ends s at its certificate's expiry: it drains it
// certDrainLead before and closes it at NotAfter. The goroutine ends with
// the session.
func (g *Gateway) watchExpiry(s tunnel.Session) {
	expires := s.Info().CertExpires
	if expires.IsZero() {
		return
	}
	go func() {
		if !g.waitUntil(s, expires.Add(-certDrainLead)) {
			return
		}
		g.drainSession(s, "certificate expires at "+expires.UTC().Format(time.RFC3339),
			"draining agent session: its certificate expires soon")
		if !g.waitUntil(s, expires) {
			return
		}
		g.closeSession(s, fmt.Errorf("the session's client certificate expired at %s; the agent must renew it "+
			"(or enroll again) to reconnect", expires.UTC().Format(time.RFC3339)),
			"agent session closed: its certificate expired")
	}()
}

// retireOlder drains the sessions of s's connector that present another
// certificate than s, which presents the newest: the older certificates
// are retired. Each closes after retireGrace, or at its certificate's
// expiry if that is sooner.
func (g *Gateway) retireOlder(s tunnel.Session) {
	info := s.Info()
	for _, o := range g.registry.Connector(info.ConnectorID) {
		if oi := o.Info(); oi.CertSerial != info.CertSerial && oi.CertSerial != "" {
			g.retire(o)
		}
	}
}

// retire drains o, whose certificate a renewal replaced, and closes it
// after retireGrace, or at its certificate's expiry if that is sooner.
func (g *Gateway) retire(o tunnel.Session) {
	oi := o.Info()
	if !g.drainSession(o, "certificate "+oi.CertSerial+" was replaced by a renewal",
		"draining agent session: its certificate was replaced by a renewal") {
		return
	}
	closeAt := g.now().Add(retireGrace)
	if oi.CertExpires.Before(closeAt) {
		closeAt = oi.CertExpires
	}
	go func() {
		if g.waitUntil(o, closeAt) {
			g.closeSession(o, retiredError(store.Connector{ID: oi.ConnectorID}, oi.CertSerial),
				"agent session closed: its certificate was replaced by a renewal")
		}
	}()
}

// Several gateway replicas share one store, but each holds the sessions
// that reached it. A revocation, or a renewal that retires a certificate,
// made through one replica closes or retires that replica's sessions at
// once; every storeSweep each replica also reads the store for the
// connectors of its own sessions and does the same for what another
// replica changed. A store that does not answer changes nothing: the
// sessions were admitted, and the next sweep tries again.

// stopContext is a context for store calls made for the gateway's own
// work (a sweep, a TLS handshake's check): it ends after d, or when the
// gateway stops (g.stopped), so that a stop does not wait for a database
// that does not answer.
func (g *Gateway) stopContext(d time.Duration) (context.Context, context.CancelFunc) {
	if g.stopCtx == nil { // a Gateway built by a test without New
		return context.WithTimeout(context.Background(), d)
	}
	return context.WithTimeout(g.stopCtx, d)
}

// storeSweep is how often the gateway checks its sessions against the
// store (Config.StoreSweep; 0 → this).
const storeSweep = time.Minute

// sweepLoop runs sweep every StoreSweep until the gateway stops. It keeps
// real time even when tests fake the clock: it only looks.
func (g *Gateway) sweepLoop() {
	t := time.NewTicker(g.cfg.storeSweep())
	defer t.Stop()
	for {
		select {
		case <-t.C:
			g.sweep()
		case <-g.stopped:
			return
		}
	}
}

// sweep closes the sessions of connectors that the store says are
// revoked, and retires those presenting a certificate older than the one
// the store records in use. It also reads the users' sign-outs that other
// gateways recorded, writes this replica's heartbeat (replicas.go), and
// asks agents holding more than their share of sessions here to move one
// (rebalance.go).
//
// A store that does not answer (store.Unavailable) ends the sweep at the
// first call that says so: each call waits up to trustTimeout, and one
// after another for every connector they held a blackholed database's
// sweep, and a stop waiting for it, for minutes.
func (g *Gateway) sweep() {
	err := g.heartbeat()
	g.rebalance()
	if store.Unavailable(err) {
		g.log.Debug("store sweep: connector not read; its sessions stay", zap.String("why", "the store does not answer"), zap.Error(err))
		return
	}
	g.syncSignOuts()
	ids := map[string]bool{}
	for _, s := range g.registry.Sessions() {
		if s.ConnectorID != "" {
			ids[s.ConnectorID] = true
		}
	}
	if !g.closeUntrusted() {
		return
	}
	for id := range ids {
		ctx, cancel := g.stopContext(trustTimeout)
		c, err := g.store.Connector(ctx, id)
		cancel()
		switch {
		case err != nil && (store.Unavailable(err) || isClosed(g.stopped)):
			g.log.Debug("store sweep: connector not read; its sessions stay", zap.String("connector", id),
				zap.String("why", "the store does not answer: the sweep stops here"), zap.Error(err))
			return
		case err != nil:
			g.log.Debug("store sweep: connector not read; its sessions stay", zap.String("connector", id), zap.Error(err))
		case !c.Revoked.IsZero():
			g.metrics.connectorRevoked(id, false) // its sessions end as revoked, not lost
			n := g.registry.CloseConnector(id, revokedError(c))
			if n > 0 {
				g.log.Warn("agent sessions closed: the connector was revoked (through another gateway replica, "+
					"or in the store directly)", zap.String("connector", id), zap.Int("sessions_closed", n))
			}
		case c.CertInUse:
			// Only older certificates than the one in use: one that expires
			// later is newer than the record (identify adopts such a one
			// when it opens a session; see there).
			for _, s := range g.registry.Connector(id) {
				if si := s.Info(); si.CertSerial != "" && si.CertSerial != c.CertSerial && si.CertExpires.Before(c.CertExpires) {
					g.retire(s)
				}
			}
		}
	}
}

// closeUntrusted closes the sessions whose client certificate chains to a
// connector CA that was retired since they opened (`sallyport gateway ca
// rotate --retire-previous`, through any replica): their agents' next
// handshake is refused, and their sessions end with them rather than at
// the certificate's expiry, up to a lifetime later. Retiring with --force
// is how an operator cuts off a CA whose key may be known to others. A
// store that does not answer changes nothing, as in sweep. It reports
// false when the store did not answer (store.Unavailable).
func (g *Gateway) closeUntrusted() bool {
	if g.authority == nil {
		return true
	}
	bySerial := map[string][]tunnel.Session{}
	keep := map[string]bool{}
	var serials []string
	for _, s := range g.registry.all() {
		serial := s.Info().CertSerial
		if serial == "" {
			continue
		}
		if !keep[serial] {
			keep[serial] = true
			serials = append(serials, serial)
		}
		bySerial[serial] = append(bySerial[serial], s)
	}
	ctx, cancel := g.stopContext(trustTimeout)
	defer cancel()
	gone, err := g.authority.Untrusted(ctx, serials)
	if err != nil {
		g.log.Debug("store sweep: connector CAs not read; sessions stay", zap.Error(err))
		return !store.Unavailable(err)
	}
	for _, serial := range gone {
		for _, s := range bySerial[serial] {
			g.closeSession(s, fmt.Errorf("certificate %s was issued by a connector CA that was retired "+
				"(sallyport gateway ca rotate --retire-previous); enroll the agent again", serial),
				"agent session closed: its certificate's connector CA was retired")
		}
	}
	g.authority.Forget(keep)
	return true
}

// drainSession stops picking s for new exchanges and tells its agent that
// the gateway will end the session (reason says why); exchanges already on
// it go on.
// It reports false, doing nothing, when s was retired before.
//
// The Drain is sent from its own goroutine: an agent that withholds
// flow-control credit (for its connection, or its control stream) blocks
// the write until the session is closed, and must hold up neither the
// caller (a new session's registration, the expiry watcher that closes s)
// nor the close.
func (g *Gateway) drainSession(s tunnel.Session, reason, msg string) bool {
	if !g.registry.Retire(s) {
		return false
	}
	g.log.Info(msg, sessionFields(s, zap.String("reason", reason))...)
	g.sendDrain(s, reason)
	return true
}

// sendDrain sends s's agent a Drain with reason, from its own goroutine
// (see drainSession), when s's transport can.
func (g *Gateway) sendDrain(s tunnel.Session, reason string) {
	if d, ok := s.(interface{ SendDrain(reason string) error }); ok {
		go func() {
			if err := d.SendDrain(reason); err != nil {
				g.log.Debug("could not send the drain message", sessionFields(s, zap.Error(err))...)
			}
		}()
	}
}

// closeSession ends s now, with whatever still runs on it.
func (g *Gateway) closeSession(s tunnel.Session, reason error, msg string) {
	if isClosed(s.Done()) {
		return
	}
	g.log.Warn(msg, sessionFields(s, zap.String("reason", reason.Error()))...)
	g.metrics.sessionCertEnded(s.Info().ID)
	s.Close(reason)
	g.registry.Remove(s)
}

// sessionFields names a session in logs: connector, session, agent,
// certificate, and extra.
func sessionFields(s tunnel.Session, extra ...zap.Field) []zap.Field {
	info := s.Info()
	return append([]zap.Field{
		zap.String("connector", info.ConnectorID), zap.String("session", info.ID),
		zap.String("agent", info.AgentName), zap.String("transport", info.Transport),
		zap.String("cert_serial", info.CertSerial), zap.Time("cert_expires", info.CertExpires),
	}, extra...)
}

// syncSignOuts reads the signed-out user sessions from the store into
// pre-authentication (see preauth.SyncSignOuts).
func (g *Gateway) syncSignOuts() {
	if g.cfg.Preauth == nil {
		return
	}
	ctx, cancel := g.stopContext(trustTimeout)
	defer cancel()
	if err := g.cfg.Preauth.SyncSignOuts(ctx); err != nil {
		g.log.Warn("signed-out sessions not read from the store; the next sweep tries again", zap.Error(err))
	}
}
