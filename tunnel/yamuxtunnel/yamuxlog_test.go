package yamuxtunnel

import (
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestYamuxLogLevels: yamux's line for a frame of a stream that is gone
// follows every stream reset with data on the way (the soak logged it at
// info, "[WARN] yamux: frame for missing stream", for downloads and
// WebSockets that clients aborted); it goes to debug, and yamux's other
// lines stay at info.
func TestYamuxLogLevels(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	l := config(zap.New(core)).Logger
	l.Printf("[WARN] yamux: frame for missing stream: %v", "Vsn:0 Type:1 Flags:0 StreamID:2312 Length:524320")
	l.Printf("[ERR] yamux: keepalive failed: %v", "i/o deadline reached")
	got := logs.AllUntimed()
	if len(got) != 2 {
		t.Fatalf("%d log entries, want 2: %v", len(got), got)
	}
	if got[0].Level != zapcore.DebugLevel {
		t.Errorf("%q logged at %s, want debug: it follows every aborted stream", got[0].Message, got[0].Level)
	}
	if got[1].Level != zapcore.InfoLevel || got[1].Message != "[ERR] yamux: keepalive failed: i/o deadline reached" {
		t.Errorf("other yamux line: %s %q, want it at info as it was", got[1].Level, got[1].Message)
	}
}
