package agent

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sallyport/sallyport/tunnel"
)

// TestStoreDownRetryLineSaysWhetherSpent: a gateway whose database failed
// while it recorded the enrollment does not know whether it spent the
// token, and says so (gateway/enroll.go). The agent's retry line said
// "(the token was not spent)" for every answer of a gateway with its
// database down, while its stop line, for the same error, said that the
// token may have been spent.
func TestStoreDownRetryLineSaysWhetherSpent(t *testing.T) {
	for _, tc := range []struct {
		name, answer string
		spent        bool
	}{
		{"before anything was recorded", tunnel.StoreDownText + "; the token was not spent; try again", false},
		{"whether it recorded the enrollment is unknown", tunnel.StoreDownText + ", and whether it recorded the " +
			"enrollment is unknown; try again, and if the gateway says the token was used, create a new one", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := enrollingAgent(t, enrollmentGateway(t, &scriptedEnrollment{answer: status.Error(codes.Unavailable, tc.answer)}))
			cfg.Backoff = Backoff{Min: time.Hour, Max: time.Hour} // one attempt, then the stop
			const retry = "cannot enroll yet: the gateway's database does not answer"
			r := startAgent(t, cfg, func(e zapcore.Entry) bool { return strings.Contains(e.Message, retry) })
			<-r.met
			r.stop()
			var line string
			for _, e := range r.logs.All() {
				if strings.Contains(e.Message, retry) {
					line = e.Message
				}
			}
			if says := strings.Contains(line, "the token was not spent"); says == tc.spent {
				t.Errorf("retry line %q; want it to say the token was not spent: %v", line, !tc.spent)
			}
			if msg, _ := stopLine(t, r); strings.Contains(msg, "may have been spent") != tc.spent {
				t.Errorf("stop line %q; want it to say the token may have been spent: %v", msg, tc.spent)
			}
		})
	}
}
