package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/testrig"
)

// grpcHost is the external host of the gRPC app; clients send it as
// :authority.
const grpcHost = "grpc.test"

// testService implements grpc.testing.TestService with one function field
// per method, so that each test writes only the handlers it needs. A nil
// field answers Unimplemented.
type testService struct {
	testgrpc.UnimplementedTestServiceServer
	unary      func(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error)
	streamOut  func(*testgrpc.StreamingOutputCallRequest, grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error
	streamIn   func(grpc.ClientStreamingServer[testgrpc.StreamingInputCallRequest, testgrpc.StreamingInputCallResponse]) error
	fullDuplex func(grpc.BidiStreamingServer[testgrpc.StreamingOutputCallRequest, testgrpc.StreamingOutputCallResponse]) error
}

func (s *testService) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if s.unary == nil {
		return s.UnimplementedTestServiceServer.UnaryCall(ctx, req)
	}
	return s.unary(ctx, req)
}

func (s *testService) StreamingOutputCall(req *testgrpc.StreamingOutputCallRequest, st grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
	if s.streamOut == nil {
		return s.UnimplementedTestServiceServer.StreamingOutputCall(req, st)
	}
	return s.streamOut(req, st)
}

func (s *testService) StreamingInputCall(st grpc.ClientStreamingServer[testgrpc.StreamingInputCallRequest, testgrpc.StreamingInputCallResponse]) error {
	if s.streamIn == nil {
		return s.UnimplementedTestServiceServer.StreamingInputCall(st)
	}
	return s.streamIn(st)
}

func (s *testService) FullDuplexCall(st grpc.BidiStreamingServer[testgrpc.StreamingOutputCallRequest, testgrpc.StreamingOutputCallResponse]) error {
	if s.fullDuplex == nil {
		return s.UnimplementedTestServiceServer.FullDuplexCall(st)
	}
	return s.fullDuplex(st)
}

// echoUnary answers with "echo:" and the request payload.
func echoUnary(_ context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	body := append([]byte("echo:"), req.GetPayload().GetBody()...)
	return &testgrpc.SimpleResponse{Payload: &testgrpc.Payload{Body: body}}, nil
}

// echoDuplex answers every message with "pong:" and its payload until the
// client half-closes.
func echoDuplex(st grpc.BidiStreamingServer[testgrpc.StreamingOutputCallRequest, testgrpc.StreamingOutputCallResponse]) error {
	for {
		req, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		body := append([]byte("pong:"), req.GetPayload().GetBody()...)
		if err := st.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: body}}); err != nil {
			return err
		}
	}
}

// startGRPCBackend serves svc with a plain-text (h2c) gRPC server on
// loopback; it stops when the test ends.
func startGRPCBackend(t *testing.T, svc testgrpc.TestServiceServer, opts ...grpc.ServerOption) *url.URL {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(opts...)
	testgrpc.RegisterTestServiceServer(s, svc)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(ln)
	}()
	t.Cleanup(func() {
		s.Stop()
		<-done
	})
	return testrig.MustURL(t, "http://"+ln.Addr().String())
}

// grpcRig starts a rig publishing backend as grpcHost, with one agent.
// edit may change the gateway config (nil keeps it).
func grpcRig(t *testing.T, backend *url.URL, edit func(*gateway.Config)) *testrig.Rig {
	t.Helper()
	rig := testrig.New(t, testrig.Options{
		Routes:  []gateway.Route{{App: "grpc", Hosts: []string{grpcHost}, Backend: backend}},
		Gateway: edit,
	})
	rig.StartAgent(nil)
	return rig
}

// dialGRPC connects a gRPC client to the gateway's public address with
// :authority grpcHost; the connection closes when the test ends.
func dialGRPC(t *testing.T, rig *testrig.Rig, creds credentials.TransportCredentials, opts ...grpc.DialOption) testgrpc.TestServiceClient {
	t.Helper()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(creds), grpc.WithAuthority(grpcHost)}, opts...)
	cc, err := grpc.NewClient("passthrough:///"+rig.G.PublicAddr().String(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return testgrpc.NewTestServiceClient(cc)
}

// plainGRPC starts svc behind a plain-HTTP gateway and returns a client.
func plainGRPC(t *testing.T, svc *testService) testgrpc.TestServiceClient {
	t.Helper()
	rig := grpcRig(t, startGRPCBackend(t, svc), nil)
	return dialGRPC(t, rig, insecure.NewCredentials())
}

// errStalled ends a boundedCtx.
var errStalled = errors.New("the test stalled for 30s")

// boundedCtx bounds a test's calls so that a relay that stalls fails the test
// instead of hanging it. It is a safety net, not a timed assertion. It is
// cancelled rather than given a deadline, so that gRPC calls made with it
// carry no grpc-timeout.
func boundedCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithCancelCause(t.Context())
	stop := time.AfterFunc(30*time.Second, func() { cancel(errStalled) })
	t.Cleanup(func() {
		stop.Stop()
		cancel(nil)
	})
	return ctx
}

// waitRecv receives from ch, failing the test if nothing arrives while ctx
// lives.
func waitRecv[T any](ctx context.Context, t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-ctx.Done():
		t.Fatalf("gave up waiting for %s: %v", what, context.Cause(ctx))
		panic("unreachable")
	}
}

// patternBytes returns n bytes derived from seed, so that a receiver can check
// content and order.
func patternBytes(seed, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(seed*31 + i*7)
	}
	return b
}

func grpcPayload(b []byte) *testgrpc.Payload { return &testgrpc.Payload{Body: b} }

func TestGRPCUnary(t *testing.T) {
	c := plainGRPC(t, &testService{unary: echoUnary})
	ctx := boundedCtx(t)
	call := func(i int) error {
		msg := fmt.Appendf(nil, "hello %d", i)
		res, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: grpcPayload(msg)})
		if err != nil {
			return fmt.Errorf("call %d: %w", i, err)
		}
		if want := append([]byte("echo:"), msg...); !bytes.Equal(res.GetPayload().GetBody(), want) {
			return fmt.Errorf("call %d: got %q, want %q", i, res.GetPayload().GetBody(), want)
		}
		return nil
	}
	// One after another: each reuses a pooled tunnel stream.
	for i := range 20 {
		if err := call(i); err != nil {
			t.Fatal(err)
		}
	}
	// At once, multiplexed on one HTTP/2 connection to the gateway.
	errs := make(chan error, 50)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() { errs <- call(100 + i) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func TestGRPCClientStreaming(t *testing.T) {
	const n = 300
	c := plainGRPC(t, &testService{
		streamIn: func(st grpc.ClientStreamingServer[testgrpc.StreamingInputCallRequest, testgrpc.StreamingInputCallResponse]) error {
			total := 0
			for i := 0; ; i++ {
				req, err := st.Recv()
				if errors.Is(err, io.EOF) {
					if i != n {
						return status.Errorf(codes.InvalidArgument, "got %d messages, want %d", i, n)
					}
					return st.SendAndClose(&testgrpc.StreamingInputCallResponse{AggregatedPayloadSize: int32(total)})
				}
				if err != nil {
					return err
				}
				if body := req.GetPayload().GetBody(); !bytes.Equal(body, patternBytes(i, i*13%1000)) {
					return status.Errorf(codes.InvalidArgument, "message %d: wrong content (%d bytes)", i, len(body))
				}
				total += len(req.GetPayload().GetBody())
			}
		},
	})
	st, err := c.StreamingInputCall(boundedCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for i := range n {
		body := patternBytes(i, i*13%1000)
		want += len(body)
		if err := st.Send(&testgrpc.StreamingInputCallRequest{Payload: grpcPayload(body)}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	res, err := st.CloseAndRecv()
	if err != nil {
		t.Fatal(err)
	}
	if got := int(res.GetAggregatedPayloadSize()); got != want {
		t.Fatalf("aggregated size %d, want %d", got, want)
	}
}

// TestGRPCServerStreaming proves that each message travels on its own: the
// server sends message k only after the client has received message k-1,
// which deadlocks (and fails on the test context) if any hop buffers.
func TestGRPCServerStreaming(t *testing.T) {
	const n = 100
	acks := make(chan int)
	c := plainGRPC(t, &testService{
		streamOut: func(req *testgrpc.StreamingOutputCallRequest, st grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
			for k, p := range req.GetResponseParameters() {
				if k > 0 {
					select {
					case got := <-acks:
						if got != k-1 {
							return status.Errorf(codes.Internal, "ack %d before message %d", got, k)
						}
					case <-st.Context().Done():
						return st.Context().Err()
					}
				}
				if err := st.Send(&testgrpc.StreamingOutputCallResponse{Payload: grpcPayload(patternBytes(k, int(p.GetSize())))}); err != nil {
					return err
				}
			}
			return nil
		},
	})
	ctx := boundedCtx(t)
	req := &testgrpc.StreamingOutputCallRequest{}
	for k := range n {
		req.ResponseParameters = append(req.ResponseParameters, &testgrpc.ResponseParameters{Size: int32(1 + k*97%5000)})
	}
	st, err := c.StreamingOutputCall(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	for k := range n {
		res, err := st.Recv()
		if err != nil {
			t.Fatalf("message %d: %v", k, err)
		}
		if !bytes.Equal(res.GetPayload().GetBody(), patternBytes(k, 1+k*97%5000)) {
			t.Fatalf("message %d: wrong content (%d bytes)", k, len(res.GetPayload().GetBody()))
		}
		if k < n-1 {
			select {
			case acks <- k:
			case <-ctx.Done():
				t.Fatalf("server never asked for message %d: %v", k+1, context.Cause(ctx))
			}
		}
	}
	if _, err := st.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after %d messages: %v, want EOF", n, err)
	}
}

func TestGRPCBidiPingPong(t *testing.T) {
	c := plainGRPC(t, &testService{fullDuplex: echoDuplex})
	bidiPingPong(t, c, 200)
}

// bidiPingPong sends n pings on one FullDuplexCall, each after the previous
// pong arrived, then half-closes and expects a clean end.
func bidiPingPong(t *testing.T, c testgrpc.TestServiceClient, n int) {
	t.Helper()
	st, err := c.FullDuplexCall(boundedCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		msg := fmt.Appendf(nil, "ping %d", i)
		if err := st.Send(&testgrpc.StreamingOutputCallRequest{Payload: grpcPayload(msg)}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		res, err := st.Recv()
		if err != nil {
			t.Fatalf("recv %d: %v", i, err)
		}
		if want := append([]byte("pong:"), msg...); !bytes.Equal(res.GetPayload().GetBody(), want) {
			t.Fatalf("round %d: got %q, want %q", i, res.GetPayload().GetBody(), want)
		}
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after close: %v, want EOF", err)
	}
}

func TestGRPCStatus(t *testing.T) {
	denied, err := status.New(codes.PermissionDenied, "not for you").WithDetails(
		&errdetails.ErrorInfo{Reason: "NO_ACCESS", Domain: "sallyport.test", Metadata: map[string]string{"who": "tester"}},
		&errdetails.RetryInfo{},
	)
	if err != nil {
		t.Fatal(err)
	}
	statuses := map[string]*status.Status{
		"not-found": status.New(codes.NotFound, "no such thing"),
		"denied":    denied,
		// grpc-message is percent-encoded on the wire; it must arrive intact.
		"encoded":  status.New(codes.FailedPrecondition, "100% sûr: ✓\nsecond line"),
		"internal": status.New(codes.Internal, "backend exploded"),
	}
	c := plainGRPC(t, &testService{
		unary: func(_ context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
			return nil, statuses[string(req.GetPayload().GetBody())].Err()
		},
		// A status after messages comes in the trailers, not in a
		// trailers-only response.
		streamOut: func(req *testgrpc.StreamingOutputCallRequest, st grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
			for k := range 3 {
				if err := st.Send(&testgrpc.StreamingOutputCallResponse{Payload: grpcPayload(patternBytes(k, 10))}); err != nil {
					return err
				}
			}
			return statuses[string(req.GetPayload().GetBody())].Err()
		},
	})
	ctx := boundedCtx(t)
	check := func(t *testing.T, err error, want *status.Status) {
		t.Helper()
		got, ok := status.FromError(err)
		if !ok {
			t.Fatalf("error %v carries no status", err)
		}
		if !proto.Equal(got.Proto(), want.Proto()) {
			t.Fatalf("status %v (details %v), want %v (details %v)", got.Proto(), got.Details(), want.Proto(), want.Details())
		}
	}
	for name, want := range statuses {
		t.Run(name+"/unary", func(t *testing.T) {
			_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: grpcPayload([]byte(name))})
			check(t, err, want)
		})
		t.Run(name+"/after-messages", func(t *testing.T) {
			st, err := c.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{Payload: grpcPayload([]byte(name))})
			if err != nil {
				t.Fatal(err)
			}
			for k := range 3 {
				res, err := st.Recv()
				if err != nil {
					t.Fatalf("message %d: %v", k, err)
				}
				if !bytes.Equal(res.GetPayload().GetBody(), patternBytes(k, 10)) {
					t.Fatalf("message %d: wrong content", k)
				}
			}
			_, err = st.Recv()
			check(t, err, want)
		})
	}
	t.Run("unimplemented", func(t *testing.T) {
		_, err := c.EmptyCall(ctx, &testgrpc.Empty{})
		check(t, err, status.New(codes.Unimplemented, "method EmptyCall not implemented"))
	})
}

func TestGRPCMetadata(t *testing.T) {
	bin := string([]byte{0, 1, 2, 0xfe, 0xff})
	// Both handlers answer with what they received: header x-seen-* and
	// trailer x-trailer-*.
	reply := func(ctx context.Context, setHeader, setTrailer func(metadata.MD) error) error {
		md, _ := metadata.FromIncomingContext(ctx)
		if err := setHeader(metadata.MD{
			"x-seen-text":   md.Get("x-client-text"),
			"x-seen-bin":    md.Get("x-client-bin"),
			"x-seen-fwd":    md.Get("x-forwarded-host"),
			"x-seen-multi":  md.Get("x-client-multi"),
			"x-header-only": {"h"},
		}); err != nil {
			return err
		}
		return setTrailer(metadata.MD{
			"x-trailer-text": {"t-" + strings.Join(md.Get("x-client-text"), ",")},
			"x-trailer-bin":  {bin},
		})
	}
	c := plainGRPC(t, &testService{
		unary: func(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
			err := reply(ctx,
				func(md metadata.MD) error { return grpc.SetHeader(ctx, md) },
				func(md metadata.MD) error { return grpc.SetTrailer(ctx, md) })
			return &testgrpc.SimpleResponse{}, err
		},
		fullDuplex: func(st grpc.BidiStreamingServer[testgrpc.StreamingOutputCallRequest, testgrpc.StreamingOutputCallResponse]) error {
			if err := reply(st.Context(), st.SetHeader,
				func(md metadata.MD) error { st.SetTrailer(md); return nil }); err != nil {
				return err
			}
			return echoDuplex(st)
		},
	})
	ctx := metadata.AppendToOutgoingContext(boundedCtx(t),
		"x-client-text", "hello metadata",
		"x-client-bin", bin,
		"x-client-multi", "one", "x-client-multi", "two")
	check := func(t *testing.T, hdr, trl metadata.MD) {
		t.Helper()
		want := map[string][]string{
			"x-seen-text":   {"hello metadata"},
			"x-seen-bin":    {bin},
			"x-seen-fwd":    {grpcHost},
			"x-seen-multi":  {"one", "two"},
			"x-header-only": {"h"},
		}
		for k, v := range want {
			if got := hdr.Get(k); fmt.Sprint(got) != fmt.Sprint(v) {
				t.Errorf("header %s = %q, want %q", k, got, v)
			}
		}
		if got := trl.Get("x-trailer-text"); len(got) != 1 || got[0] != "t-hello metadata" {
			t.Errorf("trailer x-trailer-text = %q", got)
		}
		if got := trl.Get("x-trailer-bin"); len(got) != 1 || got[0] != bin {
			t.Errorf("trailer x-trailer-bin = %q", got)
		}
		if got := trl.Get("x-header-only"); len(got) != 0 {
			t.Errorf("header x-header-only also arrived as a trailer: %q", got)
		}
	}
	t.Run("unary", func(t *testing.T) {
		var hdr, trl metadata.MD
		if _, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.Header(&hdr), grpc.Trailer(&trl)); err != nil {
			t.Fatal(err)
		}
		check(t, hdr, trl)
	})
	t.Run("bidi", func(t *testing.T) {
		st, err := c.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&testgrpc.StreamingOutputCallRequest{Payload: grpcPayload([]byte("x"))}); err != nil {
			t.Fatal(err)
		}
		// The header arrives before the stream ends.
		hdr, err := st.Header()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); err != nil {
			t.Fatal(err)
		}
		if err := st.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("after close: %v, want EOF", err)
		}
		check(t, hdr, st.Trailer())
	})
}

// TestGRPCDeadline: the client's deadline travels to the backend as
// grpc-timeout, the client gives up with DeadlineExceeded, and the backend
// handler's context ends; the connection stays usable.
func TestGRPCDeadline(t *testing.T) {
	started := make(chan bool, 1) // whether the handler's context has a deadline
	ended := make(chan error, 1)
	c := plainGRPC(t, &testService{
		unary: func(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
			if string(req.GetPayload().GetBody()) != "wait" {
				return echoUnary(ctx, req)
			}
			_, ok := ctx.Deadline()
			started <- ok
			<-ctx.Done() // the handler waits for as long as the client lets it
			ended <- ctx.Err()
			return nil, ctx.Err()
		},
	})
	ctx := boundedCtx(t)
	// Warm up so the deadline below is spent on the call alone.
	if _, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: grpcPayload([]byte("warm"))}); err != nil {
		t.Fatal(err)
	}
	dctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err := c.UnaryCall(dctx, &testgrpc.SimpleRequest{Payload: grpcPayload([]byte("wait"))})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("got %v, want DeadlineExceeded", err)
	}
	if !waitRecv(ctx, t, started, "the handler to start") {
		t.Error("the handler's context has no deadline: grpc-timeout was lost")
	}
	if err := waitRecv(ctx, t, ended, "the handler's context to end"); err == nil {
		t.Error("handler context ended without an error")
	}
	if _, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: grpcPayload([]byte("again"))}); err != nil {
		t.Fatalf("call after the deadline: %v", err)
	}
}

// TestGRPCCancel: a client that cancels a streaming call ends the backend
// handler's context. No deadline is set, so only the relay can carry the
// cancellation to the backend.
func TestGRPCCancel(t *testing.T) {
	started := make(chan struct{}, 2)
	ended := make(chan error, 2)
	hold := func(ctx context.Context) error {
		if _, ok := ctx.Deadline(); ok {
			return status.Error(codes.Internal, "unexpected deadline")
		}
		started <- struct{}{}
		<-ctx.Done()
		ended <- ctx.Err()
		return ctx.Err()
	}
	c := plainGRPC(t, &testService{
		unary: echoUnary,
		streamOut: func(_ *testgrpc.StreamingOutputCallRequest, st grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
			if err := st.Send(&testgrpc.StreamingOutputCallResponse{Payload: grpcPayload([]byte("first"))}); err != nil {
				return err
			}
			return hold(st.Context())
		},
		fullDuplex: func(st grpc.BidiStreamingServer[testgrpc.StreamingOutputCallRequest, testgrpc.StreamingOutputCallResponse]) error {
			if _, err := st.Recv(); err != nil {
				return err
			}
			if err := st.Send(&testgrpc.StreamingOutputCallResponse{Payload: grpcPayload([]byte("first"))}); err != nil {
				return err
			}
			return hold(st.Context())
		},
	})
	outer := boundedCtx(t)
	type recver interface {
		Recv() (*testgrpc.StreamingOutputCallResponse, error)
	}
	cases := map[string]func(context.Context) (recver, error){
		"server-streaming": func(ctx context.Context) (recver, error) {
			return c.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{})
		},
		"bidi": func(ctx context.Context) (recver, error) {
			st, err := c.FullDuplexCall(ctx)
			if err != nil {
				return nil, err
			}
			return st, st.Send(&testgrpc.StreamingOutputCallRequest{})
		},
	}
	for name, open := range cases {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(outer)
			defer cancel()
			st, err := open(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.Recv(); err != nil {
				t.Fatal(err)
			}
			waitRecv(outer, t, started, "the handler to start")
			cancel()
			if _, err := st.Recv(); status.Code(err) != codes.Canceled {
				t.Fatalf("after cancel: %v, want Canceled", err)
			}
			if err := waitRecv(outer, t, ended, "the handler's context to end"); !errors.Is(err, context.Canceled) {
				t.Fatalf("handler context ended with %v, want Canceled", err)
			}
			if _, err := c.UnaryCall(outer, &testgrpc.SimpleRequest{}); err != nil {
				t.Fatalf("call after cancel: %v", err)
			}
		})
	}
}

func TestGRPCLargeMessage(t *testing.T) {
	const size = 5 << 20 // above gRPC's 4 MiB default, so the raised limits matter
	const limit = 8 << 20
	svc := &testService{
		unary: func(_ context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
			if sum := sha256.Sum256(req.GetPayload().GetBody()); sum != sha256.Sum256(patternBytes(1, size)) {
				return nil, status.Errorf(codes.InvalidArgument, "request payload of %d bytes is corrupt", len(req.GetPayload().GetBody()))
			}
			return &testgrpc.SimpleResponse{Payload: grpcPayload(patternBytes(2, int(req.GetResponseSize())))}, nil
		},
	}
	rig := grpcRig(t, startGRPCBackend(t, svc, grpc.MaxRecvMsgSize(limit), grpc.MaxSendMsgSize(limit)), nil)
	c := dialGRPC(t, rig, insecure.NewCredentials(),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(limit), grpc.MaxCallSendMsgSize(limit)))
	res, err := c.UnaryCall(boundedCtx(t), &testgrpc.SimpleRequest{Payload: grpcPayload(patternBytes(1, size)), ResponseSize: size})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(res.GetPayload().GetBody(), patternBytes(2, size)) {
		t.Fatalf("response payload of %d bytes is corrupt", len(res.GetPayload().GetBody()))
	}
}
