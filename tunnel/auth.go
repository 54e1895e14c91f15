package tunnel

import (
	"errors"
	"time"
)

// Identity is who the agent of a session is, as the gateway decided from
// its credential (its verified client certificate).
type Identity struct {
	ConnectorID string // enrolled connector; its sessions share it
	Group       string // connector group
	// CertSerial and CertExpires are the serial (hex) and NotAfter of the
	// client certificate the session was opened with; empty and zero when
	// the credential has none. The gateway ends the session when the
	// certificate expires or is retired by a renewal.
	CertSerial  string
	CertExpires time.Time
}

// ErrRevoked refuses a connector that an administrator revoked. Transports
// report it to the agent distinctly (the gRPC transport as
// PERMISSION_DENIED "revoked: …"), so the agent stops instead of retrying.
var ErrRevoked = errors.New("revoked")

// ErrShuttingDown refuses a new session because the gateway is shutting
// down (it has sent its own sessions a Drain). Transports report it to the
// agent distinctly (gRPC as UNAVAILABLE "shutting down: …", QUIC and yamux
// as error code "shutting-down"), so the agent retries with backoff, and
// behind a load balancer reaches another replica.
var ErrShuttingDown = errors.New("the gateway is shutting down")
