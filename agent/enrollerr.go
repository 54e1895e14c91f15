package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/sallyport/sallyport/internal/selfsigned"
)

// Enrollment failures that need more than the gateway's status text to
// say what happened: the agent's own data dir, a gateway that was reached
// but not trusted, and an outbound proxy that refused the connection.

// DataDirError: the data dir cannot hold the credentials. Enroll finds out
// before it sends the token, so the token is usually still unused; trying
// again without changing the data dir cannot help.
type DataDirError struct {
	Dir string
	Err error // from creating the directory or a file in it
	// ConnectorID is set when the check passed but saving failed after
	// all (the disk filled up meanwhile): the gateway enrolled this
	// connector and spent a use of the token.
	ConnectorID string
}

func (e *DataDirError) Error() string {
	if e.ConnectorID != "" {
		return fmt.Sprintf("the gateway enrolled connector %s, but the data dir %s cannot hold its credentials: %v; "+
			"make room there (or choose another data dir), then enroll again: the token's use is spent, so a single-use "+
			"token needs a new one from `sallyport token create`; revoke the unusable connector with `sallyport connector revoke %s`",
			e.ConnectorID, e.Dir, e.Err, e.ConnectorID)
	}
	return fmt.Sprintf("the data dir %s cannot hold the agent's credentials: %v; make it a directory this user can write "+
		"(with free space), or choose another, then try again (the token was not sent, so it is still unused)", e.Dir, e.Err)
}

func (e *DataDirError) Unwrap() error { return e.Err }

// checkSize is written by checkDataDir: more than the credentials and
// the gateway trust take (a key, a certificate, a bundle of a few CAs),
// so that a disk too full for them is found out before the token is sent.
// Creating an empty file succeeds on a full disk.
const checkSize = 16 << 10

// checkDataDir makes sure dir can hold the credentials, the way Save
// writes them: it creates dir (0700) and writes, syncs and removes a
// temporary file of checkSize bytes in it.
func checkDataDir(dir string) error {
	fail := func(err error) error { return &DataDirError{Dir: dir, Err: err} }
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fail(err)
	}
	f, err := os.CreateTemp(dir, ".sallyport-write-check-*")
	if err != nil {
		return fail(err)
	}
	name := f.Name()
	_, err = f.Write(make([]byte, checkSize))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if rerr := os.Remove(name); err == nil {
		err = rerr
	}
	if err != nil {
		return fail(err)
	}
	return nil
}

// GatewayTrustError: the gateway was reached, but its tunnel certificate
// failed the check of EnrollConfig.TLS (no trusted CA, wrong name, or not
// the pinned fingerprint). Nothing was sent to it.
type GatewayTrustError struct {
	Gateway string // host:port; Enroll's error names it already
	// Presented is the fingerprint ("sha256:HEX") of the certificate the
	// gateway presented; a certificate is public. Empty if unknown.
	Presented string
	// Pinned is the fingerprint it did not match; empty if not pinned.
	Pinned string
	Err    error // the TLS handshake's error
}

func (e *GatewayTrustError) Error() string {
	if e.Pinned != "" {
		return fmt.Sprintf("the gateway presented a certificate with fingerprint %s, not the pinned %s", e.Presented, e.Pinned)
	}
	msg := fmt.Sprintf("the gateway was reached, but its tunnel certificate is not trusted: %v", e.Err)
	if e.Presented != "" {
		msg += fmt.Sprintf(" (it presented fingerprint %s)", e.Presented)
	}
	return msg
}

func (e *GatewayTrustError) Unwrap() error { return e.Err }

// FingerprintMismatchError is the handshake error of a PinnedTLS config
// when the gateway presents another certificate.
type FingerprintMismatchError struct {
	Presented, Pinned string // "sha256:HEX"
}

func (e *FingerprintMismatchError) Error() string {
	return fmt.Sprintf("the gateway's certificate has fingerprint %s, not the pinned %s", e.Presented, e.Pinned)
}

// trustError is the GatewayTrustError for a handshake error, or nil if the
// handshake failed for another reason (the network, not TLS on the other
// side).
func trustError(gateway string, err error) error {
	if mm, ok := errors.AsType[*FingerprintMismatchError](err); ok {
		return &GatewayTrustError{Gateway: gateway, Presented: mm.Presented, Pinned: mm.Pinned, Err: err}
	}
	if ve, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		te := &GatewayTrustError{Gateway: gateway, Err: err}
		if len(ve.UnverifiedCertificates) > 0 {
			te.Presented = selfsigned.Fingerprint(ve.UnverifiedCertificates[0])
		}
		return te
	}
	var (
		unknownCA x509.UnknownAuthorityError
		hostErr   x509.HostnameError
		invalid   x509.CertificateInvalidError
	)
	if errors.As(err, &unknownCA) || errors.As(err, &hostErr) || errors.As(err, &invalid) {
		return &GatewayTrustError{Gateway: gateway, Err: err}
	}
	return nil
}

// handshakeRecorder keeps the error of the first failed TLS handshake:
// gRPC reports it only as the text of an Unavailable status, which cannot
// tell "not trusted" from "not reached".
type handshakeRecorder struct {
	credentials.TransportCredentials
	mu  sync.Mutex
	err error // guarded by mu
	ok  bool  // a handshake succeeded; guarded by mu
	// heard: the gateway sent something over a handshaken connection
	// (its HTTP/2 settings come first, before it reads a request).
	heard atomic.Bool
}

func (h *handshakeRecorder) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	c, info, err := h.TransportCredentials.ClientHandshake(ctx, authority, raw)
	h.mu.Lock()
	if err != nil && h.err == nil {
		h.err = err
	}
	if err == nil {
		h.ok = true
	}
	h.mu.Unlock()
	if err != nil {
		return c, info, err
	}
	return &listeningConn{Conn: c, heard: &h.heard}, info, nil
}

// listeningConn notes in heard when the first bytes arrive.
type listeningConn struct {
	net.Conn
	heard *atomic.Bool
}

func (c *listeningConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && !c.heard.Load() {
		c.heard.Store(true)
	}
	return n, err
}

// handshook reports whether a TLS handshake with the gateway succeeded.
func (h *handshakeRecorder) handshook() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ok
}

// Clone keeps the recorder: gRPC may clone the credentials it was given.
func (h *handshakeRecorder) Clone() credentials.TransportCredentials {
	return h
}

func (h *handshakeRecorder) failure() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// dialRecorder is a dialer that keeps the error of its first failed dial,
// for the same reason: a proxy's refusal (a *ProxyError saying what to
// fix) would reach the caller only as text. A nil *dialRecorder stands for
// gRPC's own dialer.
type dialRecorder struct {
	dial func(ctx context.Context, addr string) (net.Conn, error)
	mu   sync.Mutex
	err  error // guarded by mu
}

// dialContext is the dialer for gRPC; nil for its own.
func (d *dialRecorder) dialContext() func(context.Context, string) (net.Conn, error) {
	if d == nil {
		return nil
	}
	return func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := d.dial(ctx, addr)
		if err != nil {
			d.mu.Lock()
			if d.err == nil {
				d.err = err
			}
			d.mu.Unlock()
		}
		return c, err
	}
}

func (d *dialRecorder) failure() error {
	if d == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

// enrollError is the error of a failed Enroll call: a connection closed
// right after the TLS handshake (ErrGatewayBusy), a trust failure of the
// handshake (hs), the failure of the dialer (dial, may be nil: a proxy's
// refusal), a timeout before a connection came up (connected: one was up
// when the call failed), or what rpcError makes of the status, with token
// refusals marked as ErrTokenRefused.
func enrollError(err error, gateway string, hs *handshakeRecorder, dial error, connected bool) error {
	handshake := hs.failure()
	if st, ok := status.FromError(err); ok && st.Code() == codes.Unavailable && hs.handshook() && !hs.heard.Load() &&
		handshake == nil && dial == nil {
		// The gateway's tunnel listener took the connection and closed
		// it before its gRPC server said a word (which it does before it
		// reads a request): too many connections without a certificate
		// from this address at once (agents behind one NAT enrolling
		// together), or it is stopping. The token was not read.
		return &busyError{msg: fmt.Sprintf("the gateway at %s closed the connection right after the TLS handshake (%s): it takes "+
			"a limited number of enrolling connections from one address at once, or it is shutting down; "+
			"try again in a moment", gateway, st.Message())}
	}
	if st, ok := status.FromError(err); ok && st.Code() == codes.Unavailable {
		if handshake != nil {
			if te := trustError(gateway, handshake); te != nil {
				return te
			}
			if _, ok := errors.AsType[tls.RecordHeaderError](handshake); ok {
				// The gateway's public or admin port, or another service.
				return fmt.Errorf("%w: something answers at %s, but not with TLS, so it is not the gateway's tunnel "+
					"listener (tunnel.addr), perhaps its public or admin port", ErrGatewayUnreachable, gateway)
			}
		}
		if dial != nil {
			return fmt.Errorf("%w: %w", ErrGatewayUnreachable, dial)
		}
	}
	if status.Code(err) == codes.DeadlineExceeded && !connected {
		// A firewall that drops the packets, or a peer that never answers.
		return fmt.Errorf("%w: no answer in time (%s); a firewall may be dropping the connection, or %s is not the gateway",
			ErrGatewayUnreachable, status.Convert(err).Message(), gateway)
	}
	if status.Code(err) == codes.Unimplemented || notGRPCAnswer(status.Convert(err).Message()) {
		// gRPC answers so before any handler runs; an HTTP status (a
		// proxy's 401 or 404) is not the gateway's answer at all, and
		// not a refusal of the token.
		return fmt.Errorf("%w; the token was not used", rpcError(err))
	}
	if status.Code(err) == codes.Unauthenticated {
		return &tokenRefusal{msg: status.Convert(err).Message()}
	}
	return rpcError(err)
}

// busyError reads as msg after ErrGatewayUnreachable's text, and matches
// ErrGatewayBusy as well as ErrGatewayUnreachable.
type busyError struct{ msg string }

func (e *busyError) Error() string { return ErrGatewayUnreachable.Error() + ": " + e.msg }

func (e *busyError) Is(target error) bool {
	return target == ErrGatewayBusy || target == ErrGatewayUnreachable
}

// tokenRefusal reads as rpcError's refusal, and matches ErrTokenRefused
// as well as ErrEnrollRefused.
type tokenRefusal struct{ msg string }

func (r *tokenRefusal) Error() string { return ErrEnrollRefused.Error() + ": " + r.msg }

func (r *tokenRefusal) Is(target error) bool {
	return target == ErrEnrollRefused || target == ErrTokenRefused
}
