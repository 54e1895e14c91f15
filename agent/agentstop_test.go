package agent

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/grpctunnel"
)

// scriptedEnrollment answers Enroll with answer; a nil answer holds the
// request, after telling arrived, until it is cancelled or release is
// closed: then it answers with a certificate for the request's key (see
// issueForCSR).
type scriptedEnrollment struct {
	tunnelv1.UnimplementedEnrollmentServiceServer
	answer  error
	arrived chan struct{} // gets a value per request held
	release chan struct{} // nil → never
}

func (s *scriptedEnrollment) Enroll(ctx context.Context, req *tunnelv1.EnrollRequest) (*tunnelv1.EnrollResponse, error) {
	if s.answer != nil {
		return nil, s.answer
	}
	s.arrived <- struct{}{}
	select {
	case <-s.release:
		return issueForCSR(req)
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// enrollmentGateway serves svc over TLS on loopback and returns its
// address.
func enrollmentGateway(t *testing.T, svc tunnelv1.EnrollmentServiceServer) string {
	t.Helper()
	ln, tc, _ := loopbackTLS(t)
	bl := &busyListener{Listener: ln, tls: tc}
	srv := grpc.NewServer()
	tunnelv1.RegisterEnrollmentServiceServer(srv, svc)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(bl) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return ln.Addr().String()
}

// stopLine is the WARN line of an agent stopped before it could enroll.
func stopLine(t *testing.T, r *runningAgent) (msg, errText string) {
	t.Helper()
	for _, e := range r.logs.All() {
		if strings.Contains(e.Message, "agent stopped before it could enroll") {
			if e.Level != zapcore.WarnLevel {
				t.Errorf("stop line at level %v, want warn", e.Level)
			}
			s, _ := e.ContextMap()["error"].(string)
			return e.Message, s
		}
	}
	t.Fatalf("no line says the agent stopped before it could enroll: %v", r.logs.All())
	return "", ""
}

// TestStopWhileWaitingToEnroll: an agent stopped while it waits to try
// enrolling again returns an error wrapping ErrEnrollInterrupted and the
// last enrollment error, and logs at WARN that it stopped before it could
// enroll, with that error, saying that the token was not spent only where
// that is certain: the gateway was not reached, or its answer says so.
// An answer that does not (a generic failure after the request was
// sent) may have come after the gateway spent the token.
func TestStopWhileWaitingToEnroll(t *testing.T) {
	for _, tc := range []struct {
		name    string
		gateway func(t *testing.T) string
		spent   bool
		errText string
	}{
		{"unreachable", func(t *testing.T) string {
			ln, _, _ := loopbackTLS(t)
			ln.Close()
			return ln.Addr().String()
		}, false, "cannot reach the gateway"},
		{"no enrollment service", func(t *testing.T) string { addr, _ := gatewayWithoutEnrollment(t); return addr },
			false, "does not support enrollment"},
		{"gateway failure before spending", func(t *testing.T) string {
			return enrollmentGateway(t, &scriptedEnrollment{answer: status.Error(codes.Internal,
				"the gateway could not issue a certificate (the token was not spent); try again")})
		}, false, "could not issue a certificate"},
		{"gateway's word as an ErrorInfo", func(t *testing.T) string {
			// The detail counts, not the wording (a later gateway may
			// say it otherwise).
			return enrollmentGateway(t, &scriptedEnrollment{answer: grpctunnel.TokenUnspentError(codes.Internal,
				"the certificate authority failed; try again")})
		}, false, "the certificate authority failed"},
		{"an ErrorInfo of another kind", func(t *testing.T) string {
			st, err := status.New(codes.Internal, "the certificate authority failed; try again").WithDetails(
				&errdetails.ErrorInfo{Domain: tunnel.ErrorDomain, Reason: "SOMETHING_ELSE"})
			if err != nil {
				t.Fatal(err)
			}
			return enrollmentGateway(t, &scriptedEnrollment{answer: st.Err()})
		}, true, "the certificate authority failed"},
		{"gateway failure of unknown effect", func(t *testing.T) string {
			return enrollmentGateway(t, &scriptedEnrollment{answer: status.Error(codes.Internal, "something broke")})
		}, true, "something broke"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := enrollingAgent(t, tc.gateway(t))
			cfg.Backoff = Backoff{Min: time.Hour, Max: time.Hour} // the stop comes while it waits
			r := startAgent(t, cfg, func(e zapcore.Entry) bool { return strings.Contains(e.Message, "enroll") })
			<-r.met
			err := r.stop()
			if !errors.Is(err, ErrEnrollInterrupted) || !strings.Contains(err.Error(), tc.errText) {
				t.Fatalf("Run: %v; want ErrEnrollInterrupted with the last enrollment error (%q)", err, tc.errText)
			}
			msg, errText := stopLine(t, r)
			if got := strings.Contains(msg, "may have been spent"); got != tc.spent ||
				!tc.spent && !strings.Contains(msg, "the token was not spent") {
				t.Errorf("stop line %q; want it to say the token may have been spent: %v", msg, tc.spent)
			}
			if !strings.Contains(errText, tc.errText) {
				t.Errorf("stop line's error %q, want %q", errText, tc.errText)
			}
		})
	}
}

// TestStopDuringEnrollRequest: a stop that comes while an enrollment
// request the gateway has received is in flight does not cut it at once:
// the gateway spends the token as it records the connector, and the
// certificate it answers with would be lost with it. The request goes on
// for up to enrollStopGrace for the answer. A certificate is saved and
// the agent stops as one stopped after enrolling does (Run returns nil,
// without a session), so the next start uses it; no answer in the grace
// cuts the request, and the WARN line says that the gateway did not
// answer in time and that a single-use token may have been spent, and
// what to do. Before, the stop cut the request at once in both cases.
func TestStopDuringEnrollRequest(t *testing.T) {
	waiting := func(e zapcore.Entry) bool { return strings.Contains(e.Message, "for the gateway's answer") }
	// stopWhileHeld starts an agent enrolling at svc, stops it once the
	// gateway holds its request, and waits until the agent says it waits
	// for the answer; it fails the test if Run returns first.
	stopWhileHeld := func(t *testing.T, svc *scriptedEnrollment) (*runningAgent, Config) {
		t.Helper()
		cfg := enrollingAgent(t, enrollmentGateway(t, svc))
		r := startAgent(t, cfg, waiting)
		<-svc.arrived
		r.cancel()
		select {
		case <-r.met:
		case <-r.done:
			t.Fatalf("Run returned at the stop without waiting for the gateway's answer: %v; logged %v", r.err, r.logs.All())
		}
		return r, cfg
	}

	t.Run("certificate after the stop", func(t *testing.T) {
		svc := &scriptedEnrollment{arrived: make(chan struct{}, 1), release: make(chan struct{})}
		r, cfg := stopWhileHeld(t, svc)
		close(svc.release)
		if err := r.stop(); err != nil {
			t.Fatalf("Run: %v; want nil, as a stop after enrolling", err)
		}
		creds, err := LoadCredentials(cfg.DataDir)
		if err != nil || creds.ConnectorID != graceConnectorID {
			t.Fatalf("credentials in data_dir: %v, %v; want connector %s saved", creds, err, graceConnectorID)
		}
		var enrolled, stopping bool
		for _, e := range r.logs.All() {
			switch {
			case e.Message == "enrolled at the gateway":
				enrolled = true
			case strings.Contains(e.Message, "stopping as told"):
				stopping = enrolled
			case e.Message == "agent starting":
				t.Errorf("the agent started after the stop: %v", e.ContextMap())
			case e.Level >= zapcore.WarnLevel:
				t.Errorf("a line at %v: %q %v", e.Level, e.Message, e.ContextMap())
			}
		}
		if !enrolled || !stopping {
			t.Errorf("want lines that the agent enrolled, then that it stops as told; logged %v", r.logs.All())
		}
	})

	t.Run("no answer in the grace", func(t *testing.T) {
		grace := enrollStopGrace
		enrollStopGrace = 200 * time.Millisecond // an upper bound only: nothing waits for it to pass
		t.Cleanup(func() { enrollStopGrace = grace })
		svc := &scriptedEnrollment{arrived: make(chan struct{}, 1)}
		r, cfg := stopWhileHeld(t, svc)
		if err := r.stop(); !errors.Is(err, ErrEnrollInterrupted) {
			t.Fatalf("Run: %v; want ErrEnrollInterrupted", err)
		}
		msg, _ := stopLine(t, r)
		for _, want := range []string{"did not answer the enrollment request within 200ms after the stop",
			"may have been spent", "sallyport token create"} {
			if !strings.Contains(msg, want) {
				t.Errorf("stop line %q; want it to say %q", msg, want)
			}
		}
		if _, err := LoadCredentials(cfg.DataDir); !errors.Is(err, ErrNotEnrolled) {
			t.Errorf("credentials in data_dir: %v; want none", err)
		}
	})
}
