package demoapp

import (
	"context"
	"net/http"
	"strings"

	"github.com/coder/websocket"
)

// maxWSMessage is the largest WebSocket message /ws reads; a bigger one closes the connection with
// StatusMessageTooBig.
const maxWSMessage = 1 << 20

// serveWS echoes every WebSocket message back with the same type until the client closes. When the
// client sends a close frame, the websocket library answers with the same code and reason, so the
// close code travels back unchanged.
//
// Origins: only same-host pages may connect (a client without an Origin header, i.e. not a browser,
// is always accepted). "Same host" is the Host header, or the host named in X-Forwarded-Host: behind
// Sallyport the browser's Origin is the app's external host while Host is usually the backend's own
// address. Trusting X-Forwarded-Host here does not open cross-site access, because a browser page
// cannot set that header on a WebSocket handshake.
func (a *app) serveWS(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{OriginPatterns: forwardedHosts(r)})
	if err != nil {
		return // Accept has already answered with a 4xx.
	}
	defer c.CloseNow()
	c.SetReadLimit(maxWSMessage)
	_ = echoMessages(r.Context(), c)
}

// echoMessages reads each message from c whole (at most maxWSMessage bytes) and writes it back
// with the same type. Reading whole messages means an oversized one is never half-echoed: the
// library closes with StatusMessageTooBig before anything of it is sent back. It returns the error
// that ended the loop; a close frame from the peer has already been answered when it does.
func echoMessages(ctx context.Context, c *websocket.Conn) error {
	for {
		typ, msg, err := c.Read(ctx)
		if err != nil {
			return err
		}
		if err := c.Write(ctx, typ, msg); err != nil {
			return err
		}
	}
}

// forwardedHosts returns the hosts in X-Forwarded-Host as origin patterns. Values holding
// path.Match metacharacters are no host name and are dropped, so they can neither widen the match
// nor make the library log a bad pattern.
func forwardedHosts(r *http.Request) []string {
	var hosts []string
	for _, v := range r.Header.Values("X-Forwarded-Host") {
		for h := range strings.SplitSeq(v, ",") {
			h = strings.TrimSpace(h)
			if h != "" && !strings.ContainsAny(h, `*?[]\`) {
				hosts = append(hosts, h)
			}
		}
	}
	return hosts
}
