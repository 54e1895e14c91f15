package tunnel

import (
	"strings"
	"sync/atomic"
)

// DrainStopping is the reason an agent's drain gives the gateway when the
// agent stops, and when no other reason was set: agents that gave no other
// reason said it whatever the cause, and gateways read it as the agent
// stopping.
const DrainStopping = "agent shutting down"

// DrainReason is the reason an agent's session gives the gateway when the
// agent drains it, which the gateway logs: the agent moves the session (to
// another gateway replica, to its renewed certificate) rather than
// stopping. The zero value says DrainStopping.
type DrainReason struct{ r atomic.Pointer[string] }

// Set sets the reason; "" means DrainStopping.
func (d *DrainReason) Set(reason string) { d.r.Store(&reason) }

// String is the reason set, or DrainStopping.
func (d *DrainReason) String() string {
	if r := d.r.Load(); r != nil && *r != "" {
		return *r
	}
	return DrainStopping
}

// maxDrainReason bounds the agent's drain reason in the session's end.
const maxDrainReason = 200

// AgentDrainedReason is, for the gateway's log, the end of a session the
// agent drained with reason: DrainStopping (what every agent said before
// agents gave other reasons) is the agent stopping; another is the agent
// moving the session, said as the agent gave it, cut to 200 bytes.
func AgentDrainedReason(reason string) string {
	switch reason {
	case DrainStopping:
		return "drained by the agent (it is stopping)"
	case "":
		return "drained by the agent"
	}
	if len(reason) > maxDrainReason {
		reason = strings.ToValidUTF8(reason[:maxDrainReason], "") + "…"
	}
	return "drained by the agent (" + reason + ")"
}
