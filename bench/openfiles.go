package bench

import (
	"fmt"
	"slices"
)

// defaultLongpoll is how many exchanges the longpoll scenario holds at once
// unless told (issue target: 10,000 over one agent).
const defaultLongpoll = 10000

// filesMargin is the open files a process needs besides the long polls'
// connections: listeners, the tunnel, the load of other paths, the runtime.
const filesMargin = 512

// filesPerHeld is how many open files one held long poll takes in one
// process: a connection at each hop (harness → gateway → agent → backend),
// so one per process in process mode and four when everything shares this
// process. On the reference paths the stdlib proxy and a TLS forwarder hold
// both sides of their hop (two), and a plain forwarder both sides and a
// splice pipe (two files) for each direction that io.Copy keeps while it
// waits (six); the link
// emulation in the harness holds both sides of the hop it shapes, which on
// a reference path is one per exchange (the relay's tunnel is shared).
// Paths run one after another: the one that needs most counts.
func (c *Config) filesPerHeld() int {
	refs, _ := c.references() // checked by Run
	link := 0
	if len(refs) > 0 && (c.LinkRTT > 0 || c.LinkRate > 0) {
		link = 2
	}
	tcp := slices.Contains(refs, ReferenceTCP)
	switch {
	case c.mode() == ModeInProcess && tcp:
		return 1 + 2*forwarderFilesPerConn + 1 + link // harness, A, B, backend
	case c.mode() == ModeInProcess && slices.Contains(refs, ReferenceTLS):
		return 1 + 2*2 + 1 + link // harness, A and B (both sides, no pipes), backend
	case c.mode() == ModeInProcess:
		return 4 + link
	case tcp:
		return forwarderFilesPerConn
	case len(refs) > 0:
		return max(2, 1+link)
	}
	return 1
}

// forwarderFilesPerConn is the open files of one connection through a
// tcp-forward forwarder: two sockets and two splice pipes.
const forwarderFilesPerConn = 6

// fitLongpoll checks that the longpoll scenario fits in limit open files
// per process (0: unknown, nothing is checked). A Longpoll left at zero is
// lowered to what fits, with a note; a Longpoll asked for that does not
// fit is an error that says what to do.
func (c *Config) fitLongpoll(scenarios []scenario, limit int) error {
	if limit <= 0 || !slices.ContainsFunc(scenarios, func(s scenario) bool { return s.kind == kindHeld }) {
		return nil
	}
	per := c.filesPerHeld()
	need := c.longpoll()*per + filesMargin
	if need <= limit {
		return nil
	}
	fits := (limit - filesMargin) / per
	if c.Longpoll == 0 && fits >= 100 {
		c.log().Warn(fmt.Sprintf("longpoll: holding %d instead of %d exchanges: the open-file limit is %d", fits, defaultLongpoll, limit))
		c.Longpoll = fits
		return nil
	}
	where := "each process"
	if c.mode() == ModeInProcess {
		where = "one process (everything runs in it with --inprocess)"
	}
	return fmt.Errorf("bench: longpoll of %d exchanges needs about %d open files in %s, and the limit is %d: "+
		"lower --longpoll to %d or less, run without --inprocess, or raise the hard limit (ulimit -Hn; LimitNOFILE= under systemd)",
		c.longpoll(), need, where, limit, max(fits, 0))
}
