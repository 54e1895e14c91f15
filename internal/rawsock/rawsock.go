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
package rawsock

import "net"

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
