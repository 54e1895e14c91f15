package agent

import (
	"errors"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/tunnel"
)

// isGatewayStoreDown reports whether err is a gateway's answer that it
// cannot check this agent now because its database does not answer. Such
// an answer is not a refusal of the certificate: the agent retries with
// its usual backoff and must not be told to enroll again. Gateways of this
// version refuse such a session with a code of its own (gRPC UNAVAILABLE
// "unavailable: …", QUIC and yamux "unavailable"), which the transports
// return as tunnel.ErrUnavailable; earlier ones refused it as
// unauthenticated, and only their words (tunnel.StoreDownText, also in
// renewal and enrollment answers) tell it apart. A refusal in the TLS
// handshake (isCertRefused) never is one: the gateway refuses there only
// certificates it checked and found untrusted.
func isGatewayStoreDown(err error) bool {
	if err == nil || isCertRefused(err) {
		return false
	}
	return errors.Is(err, tunnel.ErrUnavailable) || strings.Contains(err.Error(), tunnel.StoreDownText)
}

// logGatewayStoreDown logs a session the gateway could not admit because
// its database does not answer (isGatewayStoreDown), with the retry delay.
func logGatewayStoreDown(log *zap.Logger, transport string, err error, delay time.Duration) {
	log.Warn("the gateway cannot check this agent now: its database does not answer; retrying (do not enroll again)",
		zap.String("transport", transport), zap.Error(err), zap.Duration("retry_in", delay))
}
