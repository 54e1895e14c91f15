package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
)

// Errors of Enroll and renewal, for errors.Is.
var (
	// ErrEnrollRefused: the gateway refused the token or the request; trying
	// again with the same input cannot help.
	ErrEnrollRefused = errors.New("the gateway refused the enrollment")
	// ErrCertificateExpired: the client certificate expired; the agent must
	// be enrolled again.
	ErrCertificateExpired = errors.New("the agent's client certificate expired")
)

// EnrollConfig says how to enroll an agent.
type EnrollConfig struct {
	// Gateway is the gateway's tunnel address, host:port. Required.
	Gateway string
	// TLS verifies the gateway's tunnel certificate (see PinnedTLS). Nil →
	// system roots and the host name of Gateway.
	TLS *tls.Config
	// Token is the enrollment token. Required.
	Token string
	// Name is shown in the connector list. Empty → the host name.
	Name string
	// DataDir receives the key, certificate and CA bundle. Empty → they
	// are not saved.
	DataDir string
	// Timeout bounds the whole enrollment (0 → 30s).
	Timeout time.Duration
}

// Enroll generates the agent's key locally, sends a CSR with the token and
// returns (and saves in DataDir) the issued credentials.
func Enroll(ctx context.Context, cfg EnrollConfig) (*Credentials, error) {
	if cfg.Token == "" {
		return nil, errors.New("enroll: no token")
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	name := cfg.Name
	if name == "" {
		name = hostName()
	}
	key, csr, err := newKeyAndCSR(name)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	cc, err := dialGRPC(cfg.Gateway, cfg.TLS)
	if err != nil {
		return nil, fmt.Errorf("enroll at %s: %w", cfg.Gateway, err)
	}
	defer cc.Close()
	resp, err := tunnelv1.NewEnrollmentServiceClient(cc).Enroll(ctx, &tunnelv1.EnrollRequest{
		Token: cfg.Token, Csr: csr, Name: name, Version: Version, Platform: runtime.GOOS + "/" + runtime.GOARCH,
	})
	if err != nil {
		return nil, fmt.Errorf("enroll at %s: %w", cfg.Gateway, rpcError(err))
	}
	cert, err := certificate(resp.GetCertificate(), key)
	if err != nil {
		return nil, fmt.Errorf("enroll at %s: %w", cfg.Gateway, err)
	}
	creds, err := newCredentials(cert, resp.GetCaBundle())
	if err != nil {
		return nil, fmt.Errorf("enroll at %s: %w", cfg.Gateway, err)
	}
	if cfg.DataDir != "" {
		if err := creds.Save(cfg.DataDir); err != nil {
			return nil, err
		}
	}
	return creds, nil
}

// renew asks the gateway for a new certificate for a fresh key,
// authenticated by the current one.
func renew(ctx context.Context, addr string, base *tls.Config, cur *Credentials, name string) (*Credentials, error) {
	key, csr, err := newKeyAndCSR(name)
	if err != nil {
		return nil, err
	}
	tc := base.Clone()
	c := cur.Cert
	tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	cc, err := dialGRPC(addr, tc)
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	resp, err := tunnelv1.NewEnrollmentServiceClient(cc).Renew(ctx, &tunnelv1.RenewRequest{
		Csr: csr, Version: Version, Platform: runtime.GOOS + "/" + runtime.GOARCH,
	})
	if err != nil {
		return nil, rpcError(err)
	}
	cert, err := certificate(resp.GetCertificate(), key)
	if err != nil {
		return nil, err
	}
	return newCredentials(cert, resp.GetCaBundle())
}

func dialGRPC(addr string, tc *tls.Config) (*grpc.ClientConn, error) {
	if tc == nil {
		tc = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
}

// rpcError turns a gRPC status into an error that says what to do.
func rpcError(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	msg := st.Message()
	switch st.Code() {
	case codes.PermissionDenied:
		return fmt.Errorf("%w: %s", tunnel.ErrRevoked, strings.TrimPrefix(msg, "revoked: "))
	case codes.Unauthenticated, codes.InvalidArgument:
		return fmt.Errorf("%w: %s", ErrEnrollRefused, msg)
	case codes.ResourceExhausted:
		return fmt.Errorf("%w: %s", ErrEnrollRefused, msg)
	case codes.Unavailable:
		return fmt.Errorf("cannot reach the gateway: %s", msg)
	}
	return fmt.Errorf("%s: %s", st.Code(), msg)
}
