package grpctunnel

import (
	"net"
	"syscall"
)

// Socket options (linux/tcp.h) that package syscall does not name.
const (
	tcpUserTimeout  = 0x12
	tcpNotSentLowat = 0x19
)

// notSentLowat is the agent socket's TCP_NOTSENT_LOWAT: how much data not
// yet sent the kernel holds before a write waits. Without it the socket's
// send buffer (up to net.ipv4.tcp_wmem's 4 MiB) took a whole download
// within its stream's 1 MiB window at once, and whatever the agent wrote
// next waited behind all of it: the replacement idle streams the gateway
// waits for (stream_wait, 10 s) and the answers of other exchanges. With
// it the rest waits in gRPC, whose writer puts new streams and the frames
// of other streams (16 KiB at a time, in turn) before it. A probe at 192
// kbit/s, one 1 MiB download and a small request every 0.5 s: 51 of 88
// small requests got 503 overloaded without it, none with it; 16 MiB
// downloads over loopback cost the same CPU (35.4, 36.3, 35.0 ms without,
// 37.9, 32.7, 35.1 ms with: noise). 64 KiB is 2.7 s at 192 kbit/s and
// 0.5 ms at 1 Gbit/s, enough for the writer to come back in time.
const notSentLowat = 64 << 10

// tuneSocket sets the agent socket's options for slow links: the system's
// TCP_USER_TIMEOUT back (0: retransmissions decide, about 15 minutes) and
// TCP_NOTSENT_LOWAT (notSentLowat).
//
// gRPC's client sets TCP_USER_TIMEOUT to its keepalive timeout (min(
// keepalive, 10s)) when it dials, so that unacknowledged data, or data the
// peer's closed window held back, older than that ends the connection. On
// a slow, full link that is no sign of a dead path: a receive window stays
// shut for seconds while a relay, an outbound proxy or a router's queue in
// front of the slow part is full, and data waits behind a bloated queue
// (a probe at 128 kbit/s with a keepalive of 5 s: a download ended with
// "read: connection timed out" after 6.5 s). The session's keepalive
// (gRPC's and pingConn's) finds a dead path within keepalive +
// min(keepalive, 10s) by what is read, whatever is queued.
func tuneSocket(c net.Conn) {
	// A *net.TCPConn, or one wrapped by rawsock (which gRPC does not
	// recognise, so it has not set TCP_USER_TIMEOUT there either).
	sc, ok := c.(syscall.Conn)
	if !ok {
		return // not set by gRPC either (a proxy's connection, a test's pipe)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpUserTimeout, 0)
		_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpNotSentLowat, notSentLowat)
	})
}
