package tunnel

import (
	"errors"
	"fmt"
	"strings"
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

// ShuttingDown is ErrShuttingDown with what the gateway's refusal said,
// msg: its own words when they begin with ErrShuttingDown's (this
// version's gateways: "the gateway is shutting down; connect to another
// replica or retry later"), which were said twice before.
func ShuttingDown(msg string) error {
	if rest, ok := strings.CutPrefix(msg, ErrShuttingDown.Error()); ok {
		if rest = strings.TrimLeft(rest, ";: "); rest == "" {
			return ErrShuttingDown
		}
		return fmt.Errorf("%w; %s", ErrShuttingDown, rest)
	}
	return fmt.Errorf("%w: %s", ErrShuttingDown, msg)
}

// StoreDownText begins a gateway's answer to an agent it could not check
// because its database does not answer (a session, a renewal, an
// enrollment): nothing is wrong with the agent's certificate or token, and
// agents recognise these words to retry rather than tell their operator to
// enroll again.
const StoreDownText = "the gateway's database does not answer"

// ErrUnavailable refuses a session the gateway cannot check now because
// its database does not answer: nothing is wrong with the agent's
// credential. Its text is StoreDownText; Authenticate hooks wrap it with
// words of their own (which keep StoreDownText at the start). Transports
// report it to the agent distinctly, with those words: gRPC as UNAVAILABLE
// "unavailable: …", QUIC and yamux as error code "unavailable". The agent
// retries with its usual backoff and is not told to enroll again; agents
// of earlier versions, which know neither, recognise StoreDownText.
var ErrUnavailable = errors.New(StoreDownText)

// Unavailable is what an agent's transport returns for a gateway's
// ErrUnavailable refusal: an error matching ErrUnavailable that reads as
// the gateway's words, msg (ErrUnavailable's own text when msg is empty).
func Unavailable(msg string) error {
	if msg == "" {
		return ErrUnavailable
	}
	return &unavailableError{msg: msg}
}

type unavailableError struct{ msg string }

func (e *unavailableError) Error() string        { return e.msg }
func (e *unavailableError) Is(target error) bool { return target == ErrUnavailable }
