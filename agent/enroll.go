package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"time"

	"golang.org/x/net/http/httpproxy"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/grpctunnel"
)

// Errors of Enroll and renewal, for errors.Is.
var (
	// ErrEnrollRefused: the gateway refused the token or the request; trying
	// again with the same input cannot help.
	ErrEnrollRefused = errors.New("the gateway refused the enrollment")
	// ErrTokenRefused: the gateway refused the token itself (unknown,
	// already used, expired); such an error matches ErrEnrollRefused too.
	ErrTokenRefused = errors.New("the gateway refused the enrollment token")
	// ErrCertificateExpired: the client certificate expired; the agent must
	// be enrolled again.
	ErrCertificateExpired = errors.New("the agent's client certificate expired")
	// ErrGatewayUnreachable: no connection to the gateway came up (or it
	// broke); trying again later may help.
	ErrGatewayUnreachable = errors.New("cannot reach the gateway")
	// ErrGatewayBusy: the gateway closed the connection right after the
	// TLS handshake, before it said a word of HTTP/2: its limit of
	// connections without a client certificate from one address was
	// reached (agents behind one NAT enrolling together), or it is
	// stopping. The token was not read, so trying again in a moment is
	// safe. Such an error matches ErrGatewayUnreachable too.
	ErrGatewayBusy = errors.New("the gateway closed the connection right after the TLS handshake")
	// ErrEnrollUnsupported: the gateway answered, but has no enrollment
	// service (or no renewal in it): a sallyport gateway from before
	// connector enrollment, or another gRPC server at that address. The
	// token was not read. Trying again helps only once the gateway is
	// upgraded.
	ErrEnrollUnsupported = errors.New("the gateway does not support enrollment")
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
	// DialContext opens the TCP connection. Nil → through the proxy that
	// Proxy and ProxyEnv choose, as Config's fields of the same names do
	// for the running agent; without one, gRPC's own dialer.
	DialContext func(ctx context.Context, addr string) (net.Conn, error)
	// Proxy is the outbound HTTP CONNECT proxy, as Config.Proxy (the agent
	// config's `proxy`). Empty → ProxyEnv.
	Proxy string
	// ProxyEnv is read when Proxy is empty, as Config.ProxyEnv. Nil → no
	// proxy from the environment.
	ProxyEnv *httpproxy.Config
	// SameName, when set, is called before a successful Enroll returns if
	// the gateway says that other connectors of the group, not revoked,
	// have the name this agent enrolled with (an agent installed again
	// whose predecessor was never revoked, or agents that share a name on
	// purpose): the name and their ids, oldest first. Gateways before
	// enrollment protocol version 2 never say. Nil → not reported.
	SameName func(name string, ids []string)
	// BusyRetries is how many times Enroll tries again, after BusyBackoff,
	// when the gateway closed the connection before reading the request
	// (ErrGatewayBusy), within Timeout. Only then: a refused token is
	// never sent twice (it may be single-use). 0 → defaultBusyRetries;
	// negative → none.
	BusyRetries int
	// BusyBackoff paces those retries (zero value: 500ms doubling to 8s,
	// jittered, so that agents enrolling together spread out).
	BusyBackoff Backoff
	// OnBusyRetry, when set, is told of each such retry before its wait:
	// the attempt's error, which retry comes (1 for the first) and the
	// wait. Nil → not reported.
	OnBusyRetry func(err error, retry int, wait time.Duration)
}

// defaultBusyRetries: with BusyBackoff's default, up to about 15 s of
// waiting, within the default Timeout of 30 s.
const defaultBusyRetries = 5

func (cfg *EnrollConfig) busyRetries() int {
	switch {
	case cfg.BusyRetries < 0:
		return 0
	case cfg.BusyRetries == 0:
		return defaultBusyRetries
	}
	return cfg.BusyRetries
}

func (cfg *EnrollConfig) busyBackoff() Backoff {
	b := cfg.BusyBackoff
	if b.Max <= 0 {
		b.Max = 8 * time.Second
	}
	return b
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
	// The gateway spends the token when it issues the certificate: a data
	// dir that cannot keep it must be found out first.
	if cfg.DataDir != "" {
		if err := checkDataDir(cfg.DataDir); err != nil {
			return nil, err
		}
	}
	dial, err := cfg.dialer()
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	key, csr, err := newKeyAndCSR(name)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	req := &tunnelv1.EnrollRequest{
		Token: cfg.Token, Csr: csr, Name: name, Version: Version, Platform: runtime.GOOS + "/" + runtime.GOARCH,
	}
	var resp *tunnelv1.EnrollResponse
	backoff := cfg.busyBackoff()
	for retry := 0; ; retry++ {
		resp, err = cfg.enrollOnce(ctx, dial, req)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrGatewayBusy) || retry >= cfg.busyRetries() {
			return nil, err
		}
		wait := backoff.Next(retry)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return nil, err // no time left for another attempt
		}
		if cfg.OnBusyRetry != nil {
			cfg.OnBusyRetry(err, retry+1, wait)
		}
		if !sleep(ctx, wait) {
			return nil, err
		}
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
			return nil, &DataDirError{Dir: cfg.DataDir, Err: err, ConnectorID: creds.ConnectorID}
		}
	}
	if ids := resp.GetSameNameConnectorIds(); len(ids) > 0 && cfg.SameName != nil {
		cfg.SameName(name, ids)
	}
	return creds, nil
}

// enrollOnce sends req over a connection of its own.
func (cfg *EnrollConfig) enrollOnce(ctx context.Context, dial *dialRecorder, req *tunnelv1.EnrollRequest) (*tunnelv1.EnrollResponse, error) {
	hs := &handshakeRecorder{TransportCredentials: tlsCredentials(cfg.TLS)}
	cc, err := dialGRPC(cfg.Gateway, hs, dial.dialContext())
	if err != nil {
		return nil, fmt.Errorf("enroll at %s: %w", cfg.Gateway, err)
	}
	defer cc.Close()
	resp, err := tunnelv1.NewEnrollmentServiceClient(cc).Enroll(ctx, req)
	if err != nil {
		connected := cc.GetState() == connectivity.Ready || hs.handshook()
		return nil, fmt.Errorf("enroll at %s: %w", cfg.Gateway, enrollError(err, cfg.Gateway, hs, dial.failure(), connected))
	}
	return resp, nil
}

// dialer is the recorder of the dialer Enroll uses: DialContext, else one
// through the proxy that Proxy and ProxyEnv name; nil for gRPC's own.
func (cfg *EnrollConfig) dialer() (*dialRecorder, error) {
	if cfg.DialContext != nil {
		return &dialRecorder{dial: cfg.DialContext}, nil
	}
	proxy, err := proxyFor(cfg.Proxy, cfg.ProxyEnv, cfg.Gateway)
	if err != nil || proxy == nil {
		return nil, err
	}
	d := newProxyDialer(proxy)
	return &dialRecorder{dial: func(ctx context.Context, addr string) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", addr)
	}}, nil
}

// renew asks the gateway for a new certificate for a fresh key,
// authenticated by the current one.
func renew(ctx context.Context, addr string, base *tls.Config, cur *Credentials, name string,
	dial func(context.Context, string) (net.Conn, error)) (*Credentials, error) {
	key, csr, err := newKeyAndCSR(name)
	if err != nil {
		return nil, err
	}
	tc := base.Clone()
	c := cur.Cert
	tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	cc, err := dialGRPC(addr, tlsCredentials(tc), dial)
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

// tlsCredentials verifies the gateway with tc; nil → the system roots.
func tlsCredentials(tc *tls.Config) credentials.TransportCredentials {
	if tc == nil {
		tc = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return credentials.NewTLS(tc)
}

func dialGRPC(addr string, creds credentials.TransportCredentials, dial func(context.Context, string) (net.Conn, error)) (*grpc.ClientConn, error) {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if dial != nil {
		opts = append(opts, grpc.WithContextDialer(dial))
	}
	return grpc.NewClient("passthrough:///"+addr, opts...)
}

// rpcError turns a gRPC status into an error that says what to do. An
// answer with the gateway's word that the token was not spent
// (grpctunnel.SaysTokenUnspent) is an unspentError.
func rpcError(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	if grpctunnel.SaysTokenUnspent(err) {
		return &unspentError{statusError(st)}
	}
	return statusError(st)
}

// unspentError is an enrollment error for which the gateway said, in an
// ErrorInfo detail, that it did not spend the token (see tokenUnspent).
type unspentError struct{ err error }

func (e *unspentError) Error() string { return e.err.Error() }
func (e *unspentError) Unwrap() error { return e.err }

// statusError is rpcError for a status.
func statusError(st *status.Status) error {
	msg := st.Message()
	if notGRPCAnswer(msg) {
		// Not a gRPC server's answer but an HTTP status, which gRPC maps
		// to a code of its own (404 Unimplemented, 401 Unauthenticated,
		// 403 PermissionDenied): an HTTP server, or an HTTP/2 proxy or
		// ingress without a route (yet) to the tunnel listener. Neither
		// a gateway's refusal nor a gateway too old: try again at the
		// reconnect pace.
		return fmt.Errorf("%w: an HTTP server or proxy answered instead of the gateway's tunnel listener (%q); "+
			"check that the address is the gateway's tunnel.addr, or, behind a proxy or ingress, that it has a route "+
			"to tunnel.addr (TLS passthrough, or gRPC over HTTP/2) and that the gateway is up", ErrGatewayUnreachable, msg)
	}
	switch st.Code() {
	case codes.PermissionDenied:
		return fmt.Errorf("%w: %s", tunnel.ErrRevoked, strings.TrimPrefix(msg, "revoked: "))
	case codes.Unauthenticated, codes.InvalidArgument:
		return fmt.Errorf("%w: %s", ErrEnrollRefused, msg)
	case codes.ResourceExhausted:
		return fmt.Errorf("%w: %s", ErrEnrollRefused, msg)
	case codes.Unavailable:
		if rest, ok := strings.CutPrefix(msg, tunnel.StoreDownText); ok {
			// The gateway answered: it runs and was reached, but its
			// database does not answer, so it can neither check nor
			// spend the token now. Not unreachable: checking the
			// address or the network would not help.
			return fmt.Errorf("%w%s", tunnel.ErrUnavailable, rest)
		}
		return fmt.Errorf("%w: %s", ErrGatewayUnreachable, msg)
	case codes.Unimplemented:
		if !unknownService(msg) {
			// Not grpc-go's answer for a missing service: something
			// else at this address; try again at the reconnect pace.
			return fmt.Errorf("%w: something answered %q (Unimplemented), which is not how a sallyport gateway "+
				"answers; check that the address is the gateway's tunnel.addr", ErrGatewayUnreachable, msg)
		}
		// gRPC's own answer for a service or method the server does not
		// have: "unknown service sallyport.tunnel.v1.EnrollmentService".
		return fmt.Errorf("%w: it answered %q, so it is a sallyport gateway older than connector enrollment "+
			"(client certificates, `sallyport token create`), or another gRPC service; upgrade the gateway "+
			"(agents and gateways of any later versions work together), or check that the address is the "+
			"gateway's tunnel.addr", ErrEnrollUnsupported, msg)
	}
	return fmt.Errorf("%s: %s", st.Code(), msg)
}

// notGRPCAnswer reports whether a status message is grpc-go's rendering of
// an HTTP response that was not gRPC's: "unexpected HTTP status code
// received from server: 404 (Not Found); transport: received unexpected
// content-type …".
func notGRPCAnswer(msg string) bool {
	return strings.HasPrefix(msg, "unexpected HTTP status code received from server: ")
}

// unknownService reports whether an Unimplemented status message is a gRPC
// server's answer for a service or method it does not have ("unknown
// service sallyport.tunnel.v1.EnrollmentService", "unknown method Renew
// for service …"): a gateway from before enrollment (or renewal).
func unknownService(msg string) bool {
	return strings.HasPrefix(msg, "unknown service ") || strings.HasPrefix(msg, "unknown method ")
}
