package agent

import (
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/tunnel"
)

// isGatewayStoreDown reports whether err is a gateway's answer that it
// cannot check this agent now because its database does not answer
// (tunnel.StoreDownText, in every transport's refusal and in renewal and
// enrollment answers). Such
// an answer is not a refusal of the certificate: the agent retries with
// its usual backoff and must not be told to enroll again. A refusal in the
// TLS handshake (isCertRefused) never is one: the gateway refuses there
// only certificates it checked and found untrusted.
func isGatewayStoreDown(err error) bool {
	if err == nil || isCertRefused(err) {
		return false
	}
	return strings.Contains(err.Error(), tunnel.StoreDownText)
}

// logGatewayStoreDown logs a session the gateway could not admit because
// its database does not answer (isGatewayStoreDown), with the retry delay.
func logGatewayStoreDown(log *zap.Logger, transport string, err error, delay time.Duration) {
	log.Warn("the gateway cannot check this agent now: its database does not answer; retrying (do not enroll again)",
		zap.String("transport", transport), zap.Error(err), zap.Duration("retry_in", delay))
}
