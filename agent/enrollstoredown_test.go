package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
)

// storeDownEnroll answers every enrollment as a gateway does whose
// database does not answer.
type storeDownEnroll struct {
	tunnelv1.UnimplementedEnrollmentServiceServer
}

func (storeDownEnroll) Enroll(context.Context, *tunnelv1.EnrollRequest) (*tunnelv1.EnrollResponse, error) {
	return nil, status.Error(codes.Unavailable, tunnel.StoreDownText+"; the token was not spent; try again")
}

// TestEnrollStoreDownIsNotUnreachable: an enrollment that a gateway
// answers with its database down says so, matches tunnel.ErrUnavailable
// (what `agent enroll` gives advice by) and not ErrGatewayUnreachable: the
// gateway was reached, so checking its address or the network cannot
// help. It read "cannot reach the gateway: the gateway's database does not
// answer; …", and `agent enroll` added "check --gateway …, that the
// gateway runs, and that this machine can reach it".
func TestEnrollStoreDownIsNotUnreachable(t *testing.T) {
	ln, tc, _ := loopbackTLS(t)
	srv := grpc.NewServer()
	tunnelv1.RegisterEnrollmentServiceServer(srv, storeDownEnroll{})
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(tls.NewListener(ln, tc)) }()
	t.Cleanup(func() { srv.Stop(); <-done })

	_, err := Enroll(context.Background(), EnrollConfig{Gateway: ln.Addr().String(), Token: "spt_x", Timeout: 5 * time.Second,
		TLS: &tls.Config{InsecureSkipVerify: true}, BusyRetries: -1}) //nolint:gosec // a test server
	if err == nil {
		t.Fatal("enrolled at a gateway whose database does not answer")
	}
	if errors.Is(err, ErrGatewayUnreachable) || strings.Contains(err.Error(), "cannot reach") {
		t.Errorf("enroll, the gateway's database down: %v\nthe gateway was reached: not ErrGatewayUnreachable", err)
	}
	if !errors.Is(err, tunnel.ErrUnavailable) || !isGatewayStoreDown(err) ||
		!strings.Contains(err.Error(), "the token was not spent") {
		t.Errorf("enroll, the gateway's database down: %v\nwant tunnel.ErrUnavailable, saying the token was not spent", err)
	}
}
