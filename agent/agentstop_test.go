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
)

// scriptedEnrollment answers Enroll with answer; a nil answer holds the
// request until it is cancelled, after telling arrived.
type scriptedEnrollment struct {
	tunnelv1.UnimplementedEnrollmentServiceServer
	answer  error
	arrived chan struct{} // gets a value per request held
}

func (s *scriptedEnrollment) Enroll(ctx context.Context, _ *tunnelv1.EnrollRequest) (*tunnelv1.EnrollResponse, error) {
	if s.answer != nil {
		return nil, s.answer
	}
	s.arrived <- struct{}{}
	<-ctx.Done()
	return nil, status.FromContextError(ctx.Err()).Err()
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
			st, err := status.New(codes.Internal, "the certificate authority failed; try again").WithDetails(
				&errdetails.ErrorInfo{Domain: tunnel.ErrorDomain, Reason: tunnel.ReasonTokenUnspent})
			if err != nil {
				t.Fatal(err)
			}
			return enrollmentGateway(t, &scriptedEnrollment{answer: st.Err()})
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

// TestStopDuringEnrollRequest: a stop that cuts an enrollment request the
// gateway has received cannot know whether the gateway spent the token
// (it spends it as it records the connector, and the answer is lost): the
// WARN line says that a single-use token may have been spent and what to
// do, rather than that it was not.
func TestStopDuringEnrollRequest(t *testing.T) {
	svc := &scriptedEnrollment{arrived: make(chan struct{}, 1)}
	cfg := enrollingAgent(t, enrollmentGateway(t, svc))
	r := startAgent(t, cfg, func(zapcore.Entry) bool { return false })
	<-svc.arrived
	if err := r.stop(); !errors.Is(err, ErrEnrollInterrupted) {
		t.Fatalf("Run: %v; want ErrEnrollInterrupted", err)
	}
	if msg, _ := stopLine(t, r); !strings.Contains(msg, "may have been spent") || !strings.Contains(msg, "sallyport token create") {
		t.Errorf("stop line %q; want it to say that the token may have been spent, and what to do", msg)
	}
}
