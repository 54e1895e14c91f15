package gateway

import "time"

// The bound on the response bytes the gateway holds for clients that read
// slower than their apps send (see stallBudget).
//
// Those bytes sit in the tunnel, below the gateway: a transport receives a
// stream's data up to its flow-control window (1 MiB on every transport:
// grpctunnel, quictunnel and yamuxtunnel streamWindow) whether or not the
// gateway reads it, and the gateway reads it only as fast as the client
// takes it. So an exchange whose client is slower than its tunnel stream
// holds up to a window, and one whose client keeps up holds next to
// nothing. The gateway cannot see how much a transport buffered (that
// would take a hook in every transport), but it sees what decides it: a
// write to the client that blocks. The budget lists an exchange once its
// write has blocked for behindAfter and charges it what it may hold:
// min(the response's length, a window), with a 16 KiB grain (held).
// Listing at behindAfter is the same slow path as listing at stallAfter,
// found by the same timer, so the hot path gains nothing but one byte
// stored per response.
//
// Two holes of the count of stalled exchanges alone, measured (gRPC tunnel,
// public.max_stalled_exchanges 100, so a bound of 100 MiB):
//   - Before a stalled exchange counted (a second), nothing bounded what
//     it buffered: 8 HTTP/2 connections of 128 streams that never read
//     took the gateway from 28 to 248 MiB of RSS within 1.5 s, and 417 MiB
//     (heap 375 MiB) by 4 s. With the bound: 101 MiB at 1.5 s, 149 MiB
//     (heap 114 MiB) at the most, the first streams reset within 0.5 s.
//   - HTTP/2 streams read at about 32 KiB/s hold a full window each, but
//     their 32 KiB writes mostly return within the second: 2 connections
//     of 100 such streams held about 215 MiB of heap (252 MiB of RSS) and
//     lost 0 to 95 streams, depending on how loaded the machine was. With
//     the bound: 100 reset within 2 s, 115 MiB of heap (155 MiB of RSS).
//
// What the bound does not see: each exchange's first behindAfter, so
// about behindAfter of tunnel throughput, and the time cut exchanges take
// to let go of their windows (1,024 never-read streams at once over yamux,
// which fills windows fastest, with a bound of 100 MiB: 457 MiB of RSS at
// the most, 799 MiB before); and a client slower than its tunnel stream
// whose writes rarely block for behindAfter, which holds a window too and
// is charged only while one does. Bounding those needs the transports
// (credit given back as the gateway reads, not as data arrives).
//
// A write does not block for the 32 KiB it writes but until about a third
// of the socket's send buffer is free (the kernel wakes a blocked writer
// only then), and Linux grows that buffer up to 4 MiB (net.ipv4.tcp_wmem)
// on a link that needs it: on loopback, 32 KiB writes to a TCP client
// that reads steadily at 8 MiB/s blocked for up to 270 ms, past
// behindAfter for 48% of the time (4 MiB/s: 459 ms, 72%; 2 MiB/s: 88%). So
// a download bound by its client's link, not only a trickle, is charged
// its window much of the time (which it holds: its client is slower than
// its tunnel stream). Cutting every exchange charged over the bound had,
// with public.max_stalled_exchanges 2, two of four HTTP/1.1 downloads
// read at 4 or 8 MiB/s cut within 4 s (none before the bound; 16 MiB/s:
// none), and on real links the buffer, and the block, grow with the round
// trip. So the bound cuts, at once, only the exchanges of clients over
// their share (16 per connection, 64 per address: the holes above are
// such clients) and exchanges stalled for stallAfter; an exchange that is
// only behind, of a client within its share, is charged, and cut only
// once it stalls (see stallBudget.pickLocked).
//
// maxHeld is max × heldPerExchange: what the documentation of
// public.max_stalled_exchanges always promised ("each one held costs up to
// about 1 MiB on the gateway ... the default keeps that to about 0.5 GiB"),
// now true of the exchanges not yet stalled and of slow readers, without a
// new setting. While fewer than max exchanges of full windows are behind,
// nothing changes: a large download at full speed, a few slow mobile
// readers, many small exchanges (charged their size, not a window) are
// not cut. On a gateway that serves more downloads bound by their clients'
// links at once than max (each holds a window), those that stall (readers
// below about 1 MB/s) are cut: raise max for them, as the documentation
// says of slow readers, and as the cut's log line says.

// behindAfter is how long a write or flush to the client must block before
// its exchange is charged against the bound on held bytes. Short, as the
// tunnel fills a stream's window in milliseconds; not shorter, as the
// guard's timer fires about once per behindAfter while writes go on (a
// download: 10 runs a second, a few microseconds each), and a client that
// keeps up has its writes block for less than that.
const behindAfter = 100 * time.Millisecond

// heldPerExchange is the most one exchange is charged: the tunnel
// stream's flow-control window (QUIC may grow it up to 4 MiB on a link
// that needs it; the charge stays a window). The copy buffer and
// net/http's buffers (about 40 KiB) are within its grain.
const heldPerExchange = 1 << 20

// heldUnit is the grain of a charge smaller than heldPerExchange.
const heldUnit = 16 << 10

// maxHeldFor is the bound on held bytes for a budget of max stalled
// exchanges: max windows.
func maxHeldFor(max int) int64 {
	const limit = 1 << 62 / heldPerExchange
	return int64(min(max, limit)) * heldPerExchange
}

// held is what g's exchange may hold in its tunnel stream: its response's
// length (sizeHint), at most a window; a window when the length is not
// known (a body without one, a WebSocket). The budget charges it when it
// lists g and takes it back when it unlists g: sizeHint must not change
// meanwhile, and does not, as only the handler's goroutine sets it
// (writeResponse, before the body's first write), between writes, while
// g is not listed (a listed write is under way, or ends in end, which
// unlists it before it returns).
func (g *sendGuard) held() int64 {
	if g.sizeHint == 0 {
		return heldPerExchange
	}
	return int64(g.sizeHint) * heldUnit
}

// setBodyLength notes the length of the response body that g writes (-1:
// not known) for held, in heldUnits, at most a window. Called once per
// exchange on the handler's goroutine, before the body's first write.
func (g *sendGuard) setBodyLength(n int64) {
	switch {
	case n < 0 || n >= heldPerExchange:
		g.sizeHint = 0 // a window
	default:
		g.sizeHint = uint8(n/heldUnit + 1)
	}
}
