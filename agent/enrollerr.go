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

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/sallyport/sallyport/internal/selfsigned"
)

// Enrollment failures that need more than the gateway's status text to
// say what happened: the agent's own data dir, and a gateway that was
// reached but not trusted.

// DataDirError: the data dir cannot hold the credentials. Enroll finds out
// before it sends the token, so the token is still unused; trying again
// without changing the data dir cannot help.
type DataDirError struct {
	Dir string
	Err error // from creating the directory or a file in it
}

func (e *DataDirError) Error() string {
	return fmt.Sprintf("the data dir %s cannot hold the agent's credentials: %v; make it a directory this user can write, "+
		"or choose another, then try again (the token was not sent, so it is still unused)", e.Dir, e.Err)
}

func (e *DataDirError) Unwrap() error { return e.Err }

// checkDataDir makes sure dir can hold the credentials, the way Save
// writes them: it creates dir (0700) and writes and removes a temporary
// file in it.
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
	err = f.Close()
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
}

func (h *handshakeRecorder) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	c, info, err := h.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err != nil {
		h.mu.Lock()
		if h.err == nil {
			h.err = err
		}
		h.mu.Unlock()
	}
	return c, info, err
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

// enrollError is the error of a failed Enroll call: a trust failure of
// the TLS handshake (handshake, may be nil), or what rpcError makes of the
// status, with token refusals marked as ErrTokenRefused.
func enrollError(err error, gateway string, handshake error) error {
	if st, ok := status.FromError(err); ok && st.Code() == codes.Unavailable && handshake != nil {
		if te := trustError(gateway, handshake); te != nil {
			return te
		}
	}
	if status.Code(err) == codes.Unauthenticated {
		return &tokenRefusal{msg: status.Convert(err).Message()}
	}
	return rpcError(err)
}

// tokenRefusal reads as rpcError's refusal, and matches ErrTokenRefused
// as well as ErrEnrollRefused.
type tokenRefusal struct{ msg string }

func (r *tokenRefusal) Error() string { return ErrEnrollRefused.Error() + ": " + r.msg }

func (r *tokenRefusal) Is(target error) bool {
	return target == ErrEnrollRefused || target == ErrTokenRefused
}
