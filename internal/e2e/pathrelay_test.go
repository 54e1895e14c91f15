package e2e

import (
	"testing"

	"github.com/sallyport/sallyport/internal/testrig"
)

// The relays between an agent and the gateway that the tests cut or
// balance are testrig's: ImpairedTCP (gRPC, yamux) and ImpairedUDP (QUIC),
// here without impairment.

// pathCutter is a relay between an agent and the gateway whose path a test
// can cut: TCP for gRPC and yamux, UDP for QUIC.
type pathCutter interface {
	Addr() string
	cut()
}

// startPathRelay starts the relay that fits the rig's transport. Its cut
// drops every datagram of the client sockets open then, for QUIC (a
// reconnect opens a new socket, which passes); for TCP, with kill it
// resets every connection and stops accepting (a dead network or a killed
// agent process), without it the connections open then stay open but
// carry nothing, like a gateway host that died without closing anything
// (connections accepted later pass).
func startPathRelay(t testing.TB, rig *testrig.Rig, kill bool) pathCutter {
	if rig.Transport == "quic" {
		// TCP on the same port number for what the agent does over TCP
		// (enrollment); cut does not touch it.
		udp, _ := testrig.StartImpairedPath(t, rig.Tunnel, 1)
		return udpCutter{udp}
	}
	if kill {
		return tcpKiller{testrig.StartImpairedTCP(t, rig.Tunnel)}
	}
	return tcpFreezer{testrig.StartImpairedTCP(t, rig.Tunnel)}
}

type udpCutter struct{ *testrig.ImpairedUDP }

func (c udpCutter) cut() { c.BlackholeCurrent() }

type tcpKiller struct{ *testrig.ImpairedTCP }

func (k tcpKiller) cut() { k.Close() }

type tcpFreezer struct{ *testrig.ImpairedTCP }

func (f tcpFreezer) cut() { f.BlackholeCurrent() }

// balancer stands for a load balancer in front of gateway replicas:
// Retarget sends the connections (for QUIC: the client sockets) that come
// later to another replica.
type balancer interface {
	Addr() string
	Retarget(target string) error
	// SetPick lets pick choose the target of each new connection (QUIC:
	// client socket).
	SetPick(pick func() string)
}

func startBalancer(t *testing.T, transport, target string) balancer {
	if transport == "quic" {
		udp, tcp := testrig.StartImpairedPath(t, target, 1)
		return quicBalancer{udp, tcp}
	}
	return testrig.StartImpairedTCP(t, target)
}

// quicBalancer balances QUIC's client sockets, and forwards TCP on the
// same port number for what the agent does over TCP (enrollment): Retarget
// moves both, SetPick the client sockets only (TCP stays with the target).
type quicBalancer struct {
	*testrig.ImpairedUDP
	tcp *testrig.ImpairedTCP
}

func (b quicBalancer) Retarget(target string) error {
	if err := b.tcp.Retarget(target); err != nil {
		return err
	}
	return b.ImpairedUDP.Retarget(target)
}
