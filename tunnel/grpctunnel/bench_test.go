package grpctunnel_test

import (
	"testing"

	"github.com/sallyport/sallyport/tunnel/tunneltest"
)

// BenchmarkExchange relays GETs over a real gRPC session on loopback (TLS,
// HTTP/2, the tunnel codec), gateway and agent in this process, with a
// backend that costs next to nothing: what remains is the relay's own work.
// The cases are tunneltest.Cases, the same for every transport.
func BenchmarkExchange(b *testing.B) {
	for _, c := range tunneltest.Cases {
		b.Run(c.Name, func(b *testing.B) {
			ts := startServer(b, nil)
			ts.startAgent(c.Backend())
			tunneltest.BenchmarkExchange(b, ts.session(), c)
		})
	}
}
