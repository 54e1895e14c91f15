package grpctunnel

import (
	"context"
	"net"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
)

// TestGatewayGoneLoggedOnce: when the gateway goes away (a restart), the
// agent's idle exchange streams (16 by default) end together and their
// replacements fail to open (connection refused) in the same millisecond,
// before the control stream's end closes the session. The agent says so
// once per session, at warn; the rest go to debug. Before, it logged 16
// identical warnings.
func TestGatewayGoneLoggedOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // the gateway went away: its port refuses connections
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	core, logs := observer.New(zap.DebugLevel)
	c := &ClientSession{cc: cc, client: tunnelv1.NewTunnelServiceClient(cc), log: zap.New(core),
		streamCtx: context.Background(), welcome: &tunnelv1.Welcome{}}
	for range defaultMinIdle {
		c.openStream() // as the streams that ended replenish
	}
	c.wg.Wait()
	const msg = "could not open an exchange stream"
	warns := logs.FilterLevelExact(zapcore.WarnLevel).FilterMessageSnippet(msg).Len()
	all := logs.FilterMessageSnippet(msg).Len()
	if warns != 1 || all != defaultMinIdle {
		t.Fatalf("%d streams failed to open: %q logged %d times at warn, %d in all; want once at warn, the rest at debug",
			defaultMinIdle, msg, warns, all)
	}
}
