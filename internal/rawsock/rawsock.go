// Package rawsock reads and writes TCP sockets with system calls the Go
// scheduler is not told about.
//
// Why: every read(2) and write(2) that goes through package net enters
// the scheduler's system-call state (runtime.entersyscall). When all of a
// process's Ps were idle a moment before, Go's monitor thread (sysmon) is
// asleep, and entering that state wakes it with a futex: one more thread
// woken on every system call of a relay that waits on the network between
// each step of an exchange. And a call that runs longer than the monitor's
// tick (a write on loopback runs the receiver's TCP stack, tens of
// microseconds) can have its P taken away and handed to another thread,
// which the call must then get back. One request at a time through the
// relay (`sallyport bench --scenarios small --concurrency 1`), that was
// 6-8% of the gateway's CPU in runtime.entersyscallWakeSysmon alone, and
// with these sockets the gateway and the agent each spent 20-25% less CPU
// per exchange.
//
// Why it is safe: the sockets are non-blocking (package net makes them so),
// so a read or write returns at once, with EAGAIN when it would block;
// the wait for readiness still happens in Go's poller through
// syscall.RawConn, with the connection's deadlines. A call holds its P
// while the kernel copies the bytes, as any Go code between two scheduling
// points does.
//
// Under the race detector (and outside Linux) the same code makes its
// calls through package syscall, which tells the detector about the
// buffers the kernel reads and writes: RawSyscall would hide them.
//
// SALLYPORT_RAW_SOCKETS=off in the environment of `sallyport gateway` or
// `sallyport agent` turns it off (FromEnv): every connection then reads and
// writes through package net, as before. For measuring the difference
// (`bench --relay-env SALLYPORT_RAW_SOCKETS=off`), or a system where raw
// calls misbehave.
package rawsock

import (
	"fmt"
	"net"
	"os"
	"sync/atomic"
)

// Env is the environment variable FromEnv reads: "on" (or unset) or "off".
const Env = "SALLYPORT_RAW_SOCKETS"

// off: Wrap returns connections as they are, ReadFD and WriteFD call
// through package syscall.
var off atomic.Bool

// Set turns the raw calls on ("" or "on") or off ("off") for connections
// wrapped from now on and for ReadFD and WriteFD; any other value is an
// error and changes nothing.
func Set(v string) error {
	switch v {
	case "", "on":
		off.Store(false)
	case "off":
		off.Store(true)
	default:
		return fmt.Errorf("%s=%q: want on or off (unset means on; off makes the gateway's and agent's sockets use Go's ordinary system calls, "+
			"for a system where the raw ones misbehave or to measure the difference)", Env, v)
	}
	return nil
}

// FromEnv is Set with the value of Env in the environment: the gateway and
// agent commands call it before they start, and stop on its error.
func FromEnv() error { return Set(os.Getenv(Env)) }

// On reports whether the raw calls are on.
func On() bool { return !off.Load() }

// Listener wraps the connections its Listener accepts with Wrap.
type Listener struct{ net.Listener }

// Accept waits for the next connection and wraps it.
func (l Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Wrap(c), nil
}
