package quictunnel

import (
	"context"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlogwriter"
)

// SetTracer makes every connection opened from now on record its qlog
// events with f (nil: none).
func SetTracer(f func(context.Context, bool, quic.ConnectionID) qlogwriter.Trace) { tracer = f }
