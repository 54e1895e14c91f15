package gateway

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"

	"github.com/sallyport/sallyport/gateway/preauth"
	"github.com/sallyport/sallyport/internal/assertion"
	"github.com/sallyport/sallyport/internal/forwarded"
	"github.com/sallyport/sallyport/tunnel"
)

// The relay path of every exchange but protocol upgrades. It does what
// httputil.ReverseProxy did for them (the header rules below are the
// ReverseProxy's, with Rewrite), without its per-exchange request clones,
// client trace and context values: those were 25 of the gateway's 63
// allocations per small exchange. Upgrades (WebSockets) still go through
// the ReverseProxy, which hijacks the connection and copies both ways.
//
// Request: hop-by-hop headers (the fixed list and every header named in
// Connection) and client-sent Forwarded and X-Forwarded-* are not relayed;
// "Te: trailers" is; X-Forwarded-For, -Host and -Proto, X-Request-Id and
// the identity headers are the gateway's own; a request without User-Agent
// gets an empty one, so that the agent's client adds none.
//
// Informational responses (103 Early Hints, 102 Processing), which the agent
// relays before the final response (tunnel protocol version 3), go to the
// client as they come, without its hop-by-hop headers and without the
// headers that the gateway set for the final response; HTTP/1.0 clients
// get none (RFC 9110 section 15.2), and the agent is not asked for them.
//
// Response: hop-by-hop headers are dropped; announced trailers are
// announced again and sent after the body; a body of unknown length and an
// event stream are flushed after every write. When the body breaks off after
// the response began, the handler panics with http.ErrAbortHandler, so the
// server cuts the client's connection (or resets the HTTP/2 stream) instead
// of ending the response as if it were whole.

// hopHeaders are the hop-by-hop headers of RFC 9110 section 7.6.1 and the
// ones older proxies use, in canonical form.
var hopHeaders = [...]string{
	"Connection",
	"Proxy-Connection",
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

func isHopHeader(k string) bool {
	for _, h := range hopHeaders {
		if k == h {
			return true
		}
	}
	return false
}

// isForwardedHeader reports the headers that only the gateway sets, also
// written with '_' for '-' (X_Forwarded_For): CGI, PHP and WSGI servers
// fold both spellings to one variable (HTTP_X_FORWARDED_FOR), so a client's
// X_Forwarded_For would reach the app next to the gateway's X-Forwarded-For
// and could win (Werkzeug's ProxyFix then took the client's address,
// scheme and host from it). The request id is the gateway's too: a sane
// X-Request-Id from a trusted proxy is kept, but only in that spelling.
func isForwardedHeader(k string) bool {
	if isProxySetHeader(k) {
		return true
	}
	f := assertion.FoldName(k)
	if f == k {
		return false
	}
	c := http.CanonicalHeaderKey(f)
	return c == RequestIDHeader || isProxySetHeader(c)
}

// isProxySetHeader reports the canonical names that proxies set and apps
// believe: the client's address (X-Real-Ip, True-Client-Ip, ... read by
// chi's RealIP, Echo, nginx's realip), the scheme, port, host and prefix
// (every X-Forwarded-*, Front-End-Https, X-Url-Scheme: Rack, Spring's
// ForwardedHeaderFilter, Symfony), and the path (X-Original-Url,
// X-Rewrite-Url: IIS, old Symfony and Zend), which would let a client
// reach another path than the one the gateway routed and authorised.
func isProxySetHeader(k string) bool {
	switch k {
	case "Forwarded", "X-Real-Ip", "True-Client-Ip", "X-Client-Ip", "Client-Ip", "Cf-Connecting-Ip",
		"Fastly-Client-Ip", "X-Cluster-Client-Ip", "X-Original-Forwarded-For",
		"Front-End-Https", "X-Url-Scheme", "X-Original-Url", "X-Rewrite-Url",
		// CGI and FastCGI hand it to apps as HTTP_PROXY, which HTTP
		// clients in them took for their outbound proxy (httpoxy).
		"Proxy":
		return true
	}
	return strings.HasPrefix(k, "X-Forwarded-")
}

// connectionTokens returns the canonical names a Connection header lists
// (nil when there is none: the usual case, without an allocation).
func connectionTokens(h http.Header) []string {
	var names []string
	for _, v := range h["Connection"] {
		for tok := range strings.SplitSeq(v, ",") {
			if tok = textproto.TrimString(tok); tok != "" {
				names = append(names, http.CanonicalHeaderKey(tok))
			}
		}
	}
	return names
}

// isUpgrade reports whether r asks for a protocol switch: those exchanges
// take the ReverseProxy path.
func isUpgrade(r *http.Request) bool {
	return httpguts.HeaderValuesContainsToken(r.Header["Connection"], "Upgrade")
}

// dropH2CUpgrade removes an upgrade to cleartext HTTP/2 (Upgrade: h2c)
// from r and reports whether there was one. Relayed, a backend that takes
// it would speak HTTP/2 with the client over the upgraded connection, and
// the client could send it requests for any path without the gateway
// seeing them (h2c smuggling: past public_paths and sign-in, without the
// identity headers); r goes on as a plain request. Envoy does the same.
func dropH2CUpgrade(r *http.Request) bool {
	if !httpguts.HeaderValuesContainsToken(r.Header["Upgrade"], "h2c") {
		return false
	}
	r.Header.Del("Upgrade")
	r.Header.Del("Http2-Settings")
	return true
}

// outbound is the request relayed to the agent and what it points to, in one
// allocation.
type outbound struct {
	req  http.Request
	url  url.URL
	body inboundBody
	vals [7]string // values of the headers the gateway sets

	in *http.Request // the client's request, for fillHeader
	h  *proxyHandler
}

// inboundBody is the client's request body as the relay reads it. Close
// does not close the client's body: the server must still see a body that
// broke off (it then closes the connection, whose remaining bytes cannot be
// parsed) or was not asked for yet (100-continue: closing it would wait for
// it). Reads stop once the handler returned (stop).
type inboundBody struct {
	rc      io.ReadCloser
	stopped atomic.Bool
	eof     atomic.Bool // read to its end

	w http.ResponseWriter // the exchange's, for a read deadline (see readWhole); set by serveRelay

	// Set by readWhole for the bodyTimer that watches its read.
	timeout time.Duration // the app's
	moved   atomic.Int64  // when the last piece came (tunnel.MonoNow); 0: none since the timer was armed
	stalled atomic.Bool   // the body did not move for timeout: its read was cut
}

var errHandlerDone = errors.New("gateway: request body read after the exchange's handler returned")

// errClientWrite wraps an error writing the response to the client.
var errClientWrite = errors.New("write the response to the client")

func (b *inboundBody) Read(p []byte) (int, error) {
	if b.stopped.Load() {
		return 0, errHandlerDone
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.eof.Store(true)
	}
	return n, err
}

func (b *inboundBody) Close() error { return nil }

func (b *inboundBody) stop() { b.stopped.Store(true) }

// outRequest builds the request to relay: r's method, body and context, the
// backend's URL, and the headers described at the top of this file.
func (h *proxyHandler) outRequest(r *http.Request, st *exchangeState) (*http.Request, *outbound) {
	ob := &outbound{req: *r, url: *r.URL, in: r, h: h}
	out := &ob.req
	out.URL = &ob.url
	out.Close = false
	if r.ContentLength == 0 || r.Body == nil {
		out.Body = nil
	} else {
		ob.body.rc = r.Body
		out.Body = &ob.body
	}
	out.URL.RawQuery = cleanQuery(out.URL.RawQuery)
	(&httputil.ProxyRequest{In: r, Out: out}).SetURL(st.route.Backend)
	if st.route.PreserveHost {
		out.Host = r.Host
	}
	ob.fillHeader(st)
	scrubRequestTrailers(out, r, st)
	// Share the inbound trailer map, which the server fills when the body
	// is read to its end, so that their values reach the backend.
	out.Trailer = r.Trailer
	return out, ob
}

// fillHeader sets the relayed request's header map from the inbound
// request's: once by outRequest, and again for a retry after the map went
// back to its pool when the head was sent (see dropHeader).
func (ob *outbound) fillHeader(st *exchangeState) {
	r, out := ob.in, &ob.req
	conn := connectionTokens(r.Header)
	hdr, _ := headerMaps.Get().(http.Header)
	if hdr == nil {
		hdr = make(http.Header, len(r.Header)+4)
	}
	for k, vv := range r.Header {
		if isHopHeader(k) || isForwardedHeader(k) || slices.Contains(conn, k) {
			continue
		}
		hdr[k] = vv[:len(vv):len(vv)] // capped: an append copies
	}
	vals := ob.vals[:0]
	set := func(k, v string) {
		i := len(vals)
		vals = append(vals, v)
		hdr[k] = vals[i : i+1 : i+1]
	}
	if httpguts.HeaderValuesContainsToken(r.Header["Te"], "trailers") {
		set("Te", "trailers")
	}
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		set("X-Forwarded-For", ip)
	}
	set("X-Forwarded-Host", r.Host)
	if forwarded.HTTPS(r) {
		set("X-Forwarded-Proto", "https")
	} else {
		set("X-Forwarded-Proto", "http")
	}
	if p := forwarded.Prefix(r); p != "" {
		set("X-Forwarded-Prefix", p)
	}
	set(RequestIDHeader, st.requestID)
	out.Header = hdr
	ob.h.setIdentityHeaders(hdr, st)
	if _, ok := hdr["User-Agent"]; !ok {
		set("User-Agent", "")
	}
}

// cleanQuery returns q, or, when q holds a semicolon or a bad %-escape, q
// re-encoded without the parameters that do not parse (as the ReverseProxy
// does: a backend that splits on semicolons would see other parameters
// than the gateway).
func cleanQuery(q string) string {
	for i := 0; i < len(q); {
		switch q[i] {
		case ';':
			return reencodeQuery(q)
		case '%':
			if i+2 >= len(q) || !isHex(q[i+1]) || !isHex(q[i+2]) {
				return reencodeQuery(q)
			}
			i += 3
		default:
			i++
		}
	}
	return q
}

func reencodeQuery(q string) string {
	v, _ := url.ParseQuery(q)
	return v.Encode()
}

// serveRelay relays an exchange that is not an upgrade and writes the
// response.
func (h *proxyHandler) serveRelay(w http.ResponseWriter, r *http.Request, st *exchangeState) {
	out, ob := h.outRequest(r, st)
	defer ob.body.stop()
	ob.body.w = w
	if cb, ok := r.Body.(*countingBody); ok {
		// The relay reads the body through ob.body, which holds the
		// counting wrapper; r.Body gets the server's own body back,
		// because net/http decides by its type, when it writes the
		// response head, what to do with a body the handler did not read
		// to its end: the body of a client that waits for 100 Continue
		// (Expect), which the backend may answer without, closes the
		// connection after the response.
		r.Body = cb.rc
	}
	if iw, ok := w.(tunnel.InformationalWriter); ok && r.ProtoAtLeast(1, 1) {
		st.informational = iw
	}
	var res *http.Response
	var err error
	if out.Body != nil && wholeBody(r) && tunnel.CheckRequestHead(out) == nil {
		// A small body is read before the exchange takes a tunnel stream:
		// a client that sends it slowly, or stops, holds none (see
		// readWhole). A head that roundTrip refuses (431) is answered
		// without waiting for the body.
		st.body, err = readWhole(&ob.body, r.ContentLength, st.route.timeout())
	}
	if err == nil {
		res, err = h.relay.roundTrip(out, st, ob)
	}
	dropHeader(out) // when roundTrip did not: it was not sent, or is gRPC's
	// Sent and past any retry: a long response (a stream, a long poll)
	// does not keep the body read early.
	st.body = nil
	if out.Body != nil && r.ProtoMajor == 1 && !ob.body.eof.Load() {
		// The response head goes out while the relay has not read the
		// body to its end: a backend that answers early (a 403 to an
		// upload, or one that streams its answer while it reads), the
		// gateway's own error, or a body that broke. net/http's HTTP/1.1
		// server would first read up to 256 KiB of the rest itself, at the
		// client's pace and taking bytes from the relay; a connection that
		// closes after this response is spared that, and what is left of
		// the body (or of a malformed one) is never parsed as a request.
		// (Full duplex would skip the read too, but net/http then starts
		// its background read after the handler when the body ends, and
		// panics reading the next request.)
		w.Header().Set("Connection", "close")
	}
	if err != nil {
		h.exchangeFailed(w, r, st, err)
		return
	}
	if err := h.writeResponse(w, res); err != nil {
		res.Body.Close()
		if errors.Is(err, errClientWrite) || r.Context().Err() != nil {
			// The client hung up (or reset its HTTP/2 stream): not the
			// tunnel's failure, which alerts watch for.
			st.errCode = CodeClientClosed
		} else {
			// The body from the agent broke off (its connection, the
			// agent or the backend): the reason, with what finds the
			// exchange's access line (README Troubleshooting).
			h.g.log.Warn("the response body broke off; cutting the client's connection",
				zap.String("request_id", st.requestID), zap.String("app", st.route.App),
				zap.String("agent", st.agent), zap.Error(err))
		}
		if r.Context().Value(http.ServerContextKey) == nil {
			return // called without a server (tests): nothing to cut
		}
		panic(http.ErrAbortHandler) // the response broke off: cut it
	}
}

// wholeBody reports whether serveRelay reads r's body whole before it
// relays r: a body of known length that the tunnel sends with the head in
// one frame (at most tunnel.CoalesceLimit, without trailers), and no
// "Expect: 100-continue", which asks for the body only once the backend
// wants it (any Expect is skipped: net/http refuses other expectations).
func wholeBody(r *http.Request) bool {
	if r.ContentLength <= 0 || r.ContentLength > tunnel.CoalesceLimit || len(r.Trailer) > 0 {
		return false
	}
	_, expect := r.Header["Expect"]
	return !expect
}

// readWholeFirst is the size of readWhole's first buffer (see there).
const readWholeFirst = 4 << 10

// errBodyStalled is the cause of a small request body's read cut by its
// bodyTimer.
var errBodyStalled = errors.New("the request body did not move for the app's timeout")

// readWhole reads b, a request body of n bytes (see wholeBody), before the
// exchange takes a tunnel stream (relay.roundTrip reads one with "Expect:
// 100-continue" this way too, for an agent that does not hold bodies
// back). It used to be read by tunnel.RoundTrip after the stream was taken
// and before the head timeout started, with no bound: a client that sent
// the head of a small POST and then a few bytes held a stream, its buffer
// and a goroutine for as long as it kept its connection open, and 200 of
// them took the streams of a session (others got 503 overloaded).
//
// The read ends when the body does not move for timeout (the app's: the
// rule of a streamed body, whose head timeout counts from its last piece;
// nginx's client_body_timeout is the same kind of bound): a bodyTimer then
// sets the exchange's read deadline in the past, which fails the pending
// read, and the client gets 408 bad-request (nginx answers 408 too). Its
// cost on the fast path, where the body came with the head, is a pooled
// timer armed and stopped, without an allocation or a clock read of its
// own.
//
// The buffer grows with what arrived (from readWholeFirst bytes, doubling
// up to n), so a client that declares 64 KiB and sends nothing holds
// 4 KiB, not 64, for the timeout: slow clients no longer hold a stream
// each, and must not hold the whole declared length instead.
func readWhole(b *inboundBody, n int64, timeout time.Duration) ([]byte, error) {
	buf := make([]byte, min(n, readWholeFirst))
	b.timeout = timeout
	bt := bodyTimers.Get().(*bodyTimer)
	bt.mu.Lock()
	bt.b = b
	bt.mu.Unlock()
	bt.t.Reset(timeout)
	got := 0
	var err error
	for int64(got) < n && err == nil {
		if got == len(buf) {
			nb := make([]byte, min(n, 2*int64(len(buf))))
			copy(nb, buf)
			buf = nb
		}
		var k int
		k, err = b.Read(buf[got:])
		got += k
		if k > 0 && int64(got) < n {
			b.moved.Store(tunnel.MonoNow())
		}
	}
	bt.mu.Lock()
	bt.b = nil // a run of the timer from now on does nothing
	bt.mu.Unlock()
	if bt.t.Stop() {
		// Not if it fired: a run of it may still be on its way, which
		// must not find the next holder before its timer is armed.
		bodyTimers.Put(bt)
	}
	switch {
	case int64(got) == n:
		if b.stalled.Load() && b.w != nil {
			// The timer fired as the last bytes came: the body is whole,
			// and the read deadline it set in the past must not cut the
			// server's next read of the connection.
			_ = http.NewResponseController(b.w).SetReadDeadline(time.Time{})
		}
		return buf, nil
	case b.stalled.Load():
		e := NewError(CodeBadRequest, fmt.Sprintf("The request body stopped coming: none of it arrived for %s "+
			"(the app's timeout). Check the client's network and send the request again.", timeout),
			&tunnel.ClientBodyError{Err: fmt.Errorf("%w (%s; read %d of %d bytes): %v", errBodyStalled, timeout, got, n, err)})
		e.Status = http.StatusRequestTimeout
		return nil, e
	case err == io.EOF:
		err = io.ErrUnexpectedEOF
	}
	return nil, &tunnel.ClientBodyError{Err: err}
}

// bodyTimer watches readWhole's read of a small request body. The timers
// are pooled: one per exchange with a body would cost two allocations.
type bodyTimer struct {
	t  *time.Timer // runs fire; made once
	mu sync.Mutex
	b  *inboundBody // the body being read; nil while pooled; guarded by mu
}

var bodyTimers = sync.Pool{New: func() any {
	bt := new(bodyTimer)
	bt.t = time.AfterFunc(time.Hour, bt.fire)
	bt.t.Stop()
	return bt
}}

// fire runs on the timer. A body that moved since the timer was armed
// gets the rest of its timeout; one that did not is cut: a read deadline
// in the past fails its pending read at once (HTTP/1.1: the connection's,
// which net/http then closes; HTTP/2: the stream's). A timer that fired
// does not go back to the pool (see readWhole), so a run never finds a
// later holder.
func (bt *bodyTimer) fire() {
	bt.mu.Lock()
	defer bt.mu.Unlock()
	b := bt.b
	if b == nil {
		return
	}
	if moved := b.moved.Load(); moved != 0 {
		if left := b.timeout - time.Duration(tunnel.MonoNow()-moved); left > 0 {
			bt.t.Reset(left)
			return
		}
	}
	b.stalled.Store(true)
	// Not supported only without a server (tests): the read goes on.
	if b.w != nil {
		_ = http.NewResponseController(b.w).SetReadDeadline(time.Now())
	}
}

// headerMaps pools the header maps of relayed requests (see dropHeader).
var headerMaps sync.Pool

// maxPooledHeaders bounds the headers of a map that goes back to the pool:
// a map keeps its room when cleared.
const maxPooledHeaders = 32

// dropHeader gives the relayed request's header map back to its pool once
// its head is sent, so that an exchange that waits long for its response
// does not hold it (about 0.4 KiB a held long poll), and a small exchange
// makes no garbage of it. A request sent again after its stream broke
// (roundTrip's retry of a GET) gets a new one from fillHeader. Nothing reads
// it later but grpcDeadlinePassed, after a failed gRPC call, so a gRPC
// request keeps it. Called again, or with no map, it does nothing.
func dropHeader(out *http.Request) {
	if out.Header == nil || isGRPC(out) {
		return
	}
	h := out.Header
	out.Header = nil
	if len(h) <= maxPooledHeaders {
		clear(h)
		headerMaps.Put(h)
	}
}

// writeResponse copies res to w: head, body, trailers. An error means the
// response broke off after it began.
func (h *proxyHandler) writeResponse(w http.ResponseWriter, res *http.Response) error {
	// Hop-by-hop headers are skipped while copying (res.Header has a
	// handful of fields: cheaper than deleting every hop header name from
	// it).
	var conn []string // the names its Connection header lists; usually none
	if _, ok := res.Header["Connection"]; ok {
		conn = connectionTokens(res.Header)
	}
	dst := w.Header()
	for k, vv := range res.Header {
		if isHopHeader(k) || slices.Contains(conn, k) {
			continue
		}
		if k == "Set-Cookie" && h.g.cfg.Preauth != nil {
			if vv = preauth.DropGatewaySetCookies(vv); len(vv) == 0 {
				continue
			}
		}
		if prev, ok := dst[k]; ok {
			dst[k] = append(prev, vv...)
			continue
		}
		dst[k] = vv // res.Header is ours alone; its slices are capped
	}
	if _, ok := dst["Content-Type"]; !ok {
		// No type from the backend: net/http would add one it guessed
		// from the body (text/html for "<html>…"), which a proxy must not.
		dst["Content-Type"] = nil
	}
	announced := len(res.Trailer)
	if announced > 0 {
		names := make([]string, 0, announced)
		for k := range res.Trailer {
			names = append(names, k)
		}
		dst.Add("Trailer", strings.Join(names, ", "))
		if res.Request == nil || res.Request.Method != http.MethodHead {
			// Trailers need a chunked HTTP/1.1 body: with the backend's
			// length (an HTTP/2 backend may send both), net/http would
			// send the body with it and drop the trailers.
			delete(dst, "Content-Length")
		}
	}
	if g, ok := w.(*sendGuard); ok {
		g.setBodyLength(res.ContentLength) // what a stalled exchange may hold (stallbytes.go)
	}
	w.WriteHeader(res.StatusCode)

	var ct string
	if vv := res.Header["Content-Type"]; len(vv) > 0 && !slices.Contains(conn, "Content-Type") {
		ct = vv[0]
	}
	flush := res.ContentLength == -1 || isEventStream(ct)
	if flush {
		// Streaming: the head goes out now, before a body that may be slow
		// to come.
		flushResponse(w)
	}
	if err := h.copyBody(w, res.Body, flush); err != nil {
		return err
	}
	res.Body.Close() // now, so that res.Trailer is complete
	if len(res.Trailer) == 0 {
		return nil
	}
	// Trailers need chunked encoding: flushing before the handler returns
	// keeps net/http from adding a Content-Length to a short body.
	flushResponse(w)
	if len(res.Trailer) == announced {
		for k, vv := range res.Trailer {
			dst[k] = append(dst[k], vv...)
		}
		return nil
	}
	for k, vv := range res.Trailer { // some were not announced
		k = http.TrailerPrefix + k
		dst[k] = append(dst[k], vv...)
	}
	return nil
}

// WriteInformational sends an informational response of the backend to the
// client (see tunnel.Options.Informational): header without its hop-by-hop
// fields. net/http sends a 1xx with the header map as it is and keeps the
// map for the final response, so the headers the gateway set for that one
// (a refreshed session cookie) are put aside meanwhile: the 1xx carries
// only its own, and the final response none of the 1xx's.
func (s *statusRecorder) WriteInformational(code int, header http.Header) {
	dst := s.Header()
	var kept http.Header
	if len(dst) > 0 {
		kept = dst.Clone()
		clear(dst)
	}
	var conn []string
	if _, ok := header["Connection"]; ok {
		conn = connectionTokens(header)
	}
	for k, vv := range header {
		if !isHopHeader(k) && !slices.Contains(conn, k) {
			dst[k] = vv
		}
	}
	s.WriteHeader(code) // not recorded as the status: it is informational
	clear(dst)
	for k, vv := range kept {
		dst[k] = vv
	}
}

// copyBody copies the response body to w, flushing after every write when
// flush is set. Otherwise net/http keeps up to a few KiB (and a head that
// came without body bytes) in its buffers until more is written, which is
// right while the body flows; when the body pauses for pauseFlushDelay,
// what was written is flushed, so that a backend that sends part of a
// body of known length and then thinks (or a head long before its body)
// is not held back by the gateway.
func (h *proxyHandler) copyBody(w http.ResponseWriter, body io.Reader, flush bool) error {
	bp := h.buffers.get()
	defer h.buffers.put(bp)
	buf := *bp
	var pf *pauseFlusher
	if !flush {
		defer func() {
			if pf != nil {
				pf.stop()
			}
		}()
		if mayWait(body) {
			pf = newPauseFlusher(w) // the head is written but not sent
		}
	}
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if pf != nil {
				pf.mu.Lock()
			}
			_, err := w.Write(buf[:n])
			if pf != nil {
				pf.dirty = true
				pf.mu.Unlock()
			}
			if err != nil {
				return fmt.Errorf("%w: %w", errClientWrite, err)
			}
			if flush {
				if err := flushResponse(w); err != nil && !errors.Is(err, http.ErrNotSupported) {
					return fmt.Errorf("%w: %w", errClientWrite, err)
				}
			} else if rerr == nil && mayWait(body) {
				if pf == nil {
					pf = newPauseFlusher(w)
				} else {
					pf.arm()
				}
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr // serveRelay logs it, with the exchange's fields
		}
	}
}

// flushResponse flushes w as http.ResponseController.Flush does. The
// controller is made here, where it does not escape, rather than once per
// exchange in writeResponse: most responses (a body of known length that
// came whole) are never flushed by the handler, and the controller was an
// allocation per exchange.
func flushResponse(w http.ResponseWriter) error {
	return http.NewResponseController(w).Flush()
}

// pauseFlushDelay is how long a response body of known length may pause
// before what the gateway wrote of it is flushed to the client.
const pauseFlushDelay = 5 * time.Millisecond

// mayWait reports whether the next Read of a response body may wait for
// the agent (see tunnel's responseBody.MayWait); a body that cannot tell
// is assumed to.
func mayWait(body io.Reader) bool {
	if mw, ok := body.(interface{ MayWait() bool }); ok {
		return mw.MayWait()
	}
	return true
}

// pauseFlusher flushes a response when its body pauses: a timer armed
// while copyBody waits for the body flushes what was written since the
// last flush. mu serialises the timer's flush with copyBody's writes (a
// ResponseWriter is not safe for concurrent use).
type pauseFlusher struct {
	mu    sync.Mutex
	w     http.ResponseWriter
	dirty bool // written since the last flush; the head counts
	done  bool // copyBody returned: the writer is no longer ours to flush
	timer *time.Timer
}

// newPauseFlusher returns an armed pauseFlusher with the head unsent.
func newPauseFlusher(w http.ResponseWriter) *pauseFlusher {
	pf := &pauseFlusher{w: w, dirty: true}
	pf.timer = time.AfterFunc(pauseFlushDelay, pf.fire)
	return pf
}

func (pf *pauseFlusher) arm() { pf.timer.Reset(pauseFlushDelay) }

func (pf *pauseFlusher) fire() {
	pf.mu.Lock()
	defer pf.mu.Unlock()
	if pf.done || !pf.dirty {
		return
	}
	pf.dirty = false
	// An error (the client left) shows again at copyBody's next write.
	_ = flushResponse(pf.w)
}

func (pf *pauseFlusher) stop() {
	pf.timer.Stop()
	pf.mu.Lock()
	pf.done = true
	pf.mu.Unlock()
}

// isEventStream reports whether a Content-Type is text/event-stream (with
// or without parameters), which is flushed event by event.
func isEventStream(ct string) bool {
	const es = "text/event-stream"
	if len(ct) < len(es) || !strings.EqualFold(ct[:len(es)], es) {
		return false
	}
	rest := strings.TrimLeft(ct[len(es):], " \t")
	return rest == "" || rest[0] == ';'
}
