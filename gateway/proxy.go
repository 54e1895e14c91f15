package gateway

import (
	"context"
	"errors"
	"maps"
	"math"
	"net/http"
	"net/http/httputil"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/gateway/preauth"
	"github.com/sallyport/sallyport/internal/forwarded"
	"github.com/sallyport/sallyport/tunnel"
)

// maxAttempts bounds how many sessions one exchange tries when streams fail
// before anything was sent.
const maxAttempts = 3

// exchangeState is the gateway's state of one exchange, from ServeHTTP to
// the access log. On the ReverseProxy path (upgrades) it travels in the
// request context through Rewrite, Transport and ErrorHandler. It is only
// touched by the request's handler goroutine.
type exchangeState struct {
	route     *Route
	requestID string
	agent     string // agent that carried the exchange
	session   string
	errCode   string            // code of an error the gateway answered itself
	identity  *preauth.Identity // signed-in user (routes with Preauth)
	assertion string            // signed assertion of identity
	// informational takes the backend's informational responses (103
	// Early Hints, …) for the client; nil when the client cannot have
	// them (HTTP/1.0, upgrades). Set by serveRelay.
	informational tunnel.InformationalWriter
	// body is the whole request body when serveRelay read it before the
	// exchange took a stream (see readWhole); nil otherwise.
	body []byte

	wait waitContext // the first attempt's stream wait (see relay.roundTrip)
}

type stateKey struct{}

func stateFrom(ctx context.Context) *exchangeState {
	st, _ := ctx.Value(stateKey{}).(*exchangeState)
	return st
}

// proxyHandler is the public HTTP handler: routing, request ids, the
// relay (forward.go; the ReverseProxy for upgrades) and the access log.
type proxyHandler struct {
	g       *Gateway
	log     *zap.Logger
	relay   *relay
	buffers *copyBuffers           // response body copies
	guards  sync.Pool              // of *guardTimer (sendGuard)
	stalls  *stallBudget           // nil: no limit
	proxy   *httputil.ReverseProxy // protocol upgrades only
}

// copyBuffers is the pool of response body copy buffers. get and put keep
// the pointer that the pool holds (Put, the ReverseProxy's, allocates one).
type copyBuffers struct{ p sync.Pool }

func (b *copyBuffers) get() *[]byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return v
	}
	buf := make([]byte, 32<<10)
	return &buf
}

func (b *copyBuffers) put(buf *[]byte) { b.p.Put(buf) }

func (b *copyBuffers) Get() []byte    { return *b.get() }
func (b *copyBuffers) Put(buf []byte) { b.p.Put(&buf) }

func newProxyHandler(g *Gateway) *proxyHandler {
	h := &proxyHandler{g: g, log: accessLogger(g.log), relay: &relay{g: g}, buffers: &copyBuffers{},
		stalls: newStallBudget(g.cfg.MaxStalledExchanges, g.log)}
	h.proxy = &httputil.ReverseProxy{
		Rewrite:        h.rewrite,
		ModifyResponse: h.upgradeResponse,
		Transport:      h.relay,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			h.exchangeFailed(w, r, stateFrom(r.Context()), err)
		},
		BufferPool: h.buffers,
		ErrorLog:   stdLogAtWarn(g.log.Named("proxy")),
	}
	return h
}

// exchange is what ServeHTTP keeps for one exchange, in one allocation.
type exchange struct {
	st    exchangeState
	rec   statusRecorder
	guard sendGuard // what serveRelay writes to
	body  countingBody
	rid   [1]string // the value slice of the request's X-Request-Id header
}

func (h *proxyHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	h.g.metrics.exchangeStarted()
	x := &exchange{rec: statusRecorder{ResponseWriter: w}}
	rid := RequestID(r.Header.Get(RequestIDHeader))
	x.rid[0] = rid
	r.Header[RequestIDHeader] = x.rid[:]
	rec, st := &x.rec, &x.st
	st.requestID = rid
	var body *countingBody
	if r.Body != nil && r.Body != http.NoBody {
		body = &x.body
		body.rc = r.Body
		r.Body = body
	}
	defer func() {
		status := rec.Status()
		if st.errCode == CodeClientClosed && rec.status == 0 && !rec.hijacked {
			status = StatusClientClosed // nothing was written: the client left first
		}
		f := accessFields{
			Method: r.Method, Path: r.URL.EscapedPath(), Status: status,
			BytesOut: rec.BytesWritten(), Duration: time.Since(start),
			Agent: st.agent, Session: st.session, RequestID: rid,
			Remote: r.RemoteAddr, ErrCode: st.errCode,
		}
		if st.route != nil {
			f.App = st.route.App
		}
		if st.identity != nil {
			f.User, f.Email = st.identity.Subject, st.identity.Email
		}
		if body != nil {
			f.BytesIn = body.N()
		}
		if p := recover(); p != nil {
			// The ReverseProxy aborts a response that broke off midway
			// with http.ErrAbortHandler; log the exchange, then let the
			// server close the connection.
			if f.ErrCode == "" {
				f.ErrCode = CodeTunnelFailed
			}
			h.g.metrics.exchangeDone(st.route, &f, start, rec.headAt)
			logAccess(h.log, f)
			panic(p)
		}
		h.g.metrics.exchangeDone(st.route, &f, start, rec.headAt)
		logAccess(h.log, f)
	}()

	if !h.admit(rec, r, st) {
		return
	}
	if isUpgrade(r) && !dropH2CUpgrade(r) {
		// Slow path: the ReverseProxy hijacks the connection of an upgrade
		// and copies both ways. Shutdown waits for these itself.
		h.g.upgrades.Add(1)
		defer h.g.upgrades.Done()
		// A backend that does not switch protocols (a 200 to a request
		// that only says Connection: Upgrade) has its response written
		// through uw: x.guard watches it as it watches a relayed one.
		// Deferred: a write the guard cut makes the ReverseProxy panic.
		x.guard.init(h, rec, st, r.RemoteAddr)
		defer x.guard.release()
		uw := &upgradeWriter{sendGuard: &x.guard}
		defer func() {
			// Before the access log, which a panic reaches too.
			if uw.release() || uw.writeFailed && st.errCode == "" {
				st.errCode = CodeClientClosed
			}
		}()
		h.proxy.ServeHTTP(uw, r.WithContext(context.WithValue(r.Context(), stateKey{}, st)))
		return
	}
	x.guard.init(h, rec, st, r.RemoteAddr)
	defer x.guard.release()
	h.serveRelay(&x.guard, r, st)
}

// rewrite points the outgoing request at the app's backend. The
// ReverseProxy has already removed hop-by-hop headers and every client-sent
// X-Forwarded-* header, so the ones set here are the gateway's own.
func (h *proxyHandler) rewrite(pr *httputil.ProxyRequest) {
	st := stateFrom(pr.In.Context())
	pr.SetURL(st.route.Backend)
	// The ReverseProxy removed X-Forwarded-* as spelt; the spellings with
	// '_' (X_Forwarded_For, X_Request_Id), which CGI, PHP and WSGI fold
	// onto the gateway's own, go as on the relay path (outRequest).
	for k := range pr.Out.Header {
		if isForwardedHeader(k) {
			delete(pr.Out.Header, k)
		}
	}
	pr.SetXForwarded()
	if pr.In.TLS == nil && forwarded.HTTPS(pr.In) {
		pr.Out.Header.Set("X-Forwarded-Proto", "https")
	}
	if p := forwarded.Prefix(pr.In); p != "" {
		pr.Out.Header.Set("X-Forwarded-Prefix", p)
	}
	if st.route.PreserveHost {
		pr.Out.Host = pr.In.Host
	}
	pr.Out.Header.Set("X-Request-Id", st.requestID)
	h.setIdentity(pr.Out, pr.In, st)
	// The ReverseProxy cloned the request before the client sent its
	// trailers: share the inbound map, which the server fills when the body
	// is read to its end, so that their values reach the backend.
	pr.Out.Trailer = pr.In.Trailer
}

// exchangeFailed answers an exchange that failed before a response began.
func (h *proxyHandler) exchangeFailed(w http.ResponseWriter, r *http.Request, st *exchangeState, err error) {
	e := ErrorFor(err)
	var be *tunnel.ClientBodyError
	bodyBroke := errors.As(err, &be)
	if e.Code == CodeBadRequest && bodyBroke && r.Context().Err() != nil && !errors.Is(err, errBodyStalled) {
		// The body broke because the client left: its connection ended
		// (net/http cancels the request when a read of it fails, EOF
		// included) or, over HTTP/2, it reset the stream. Nobody is left
		// to read a 400, and the upload was not malformed. (Not a body
		// that stopped coming: the gateway's read deadline failed that
		// read, and the client, still there, gets its 408; see readWhole.)
		e = NewError(CodeClientClosed, "", err)
	}
	if st != nil {
		st.errCode = e.Code
	}
	if e.Code == CodeClientClosed {
		if r.Context().Value(http.ServerContextKey) != nil {
			// The client went away, or only half-closed its connection
			// after the request (net/http cancels the request then too):
			// cut the connection without a response. Returning would make
			// net/http answer an empty 200 OK, which a half-closed client
			// still reads and takes for the backend's answer.
			panic(http.ErrAbortHandler)
		}
		return
	}
	fields := []zap.Field{zap.String("code", e.Code), zap.Error(err)}
	if st != nil {
		fields = append(fields, zap.String("request_id", st.requestID), zap.String("app", st.route.App),
			zap.String("agent", st.agent))
	}
	// A body the client broke off (a FIN mid-upload, malformed chunking)
	// is the client's doing, with nothing for the operator to act on: one
	// line per aborted upload at info, not a warning (a soak: 364 such
	// warnings in 11 minutes).
	if bodyBroke {
		h.g.log.Info("exchange failed: the client's request body could not be read", fields...)
	} else {
		h.g.log.Warn("exchange failed", fields...)
	}
	WriteError(w, r, e)
}

// relay picks a session of the app's group and relays the exchange over it.
// It is the ReverseProxy's Transport on the upgrade path.
type relay struct{ g *Gateway }

// RoundTrip relays req with the state that its context carries.
func (t *relay) RoundTrip(req *http.Request) (*http.Response, error) {
	st := stateFrom(req.Context())
	if st == nil {
		return nil, errors.New("gateway: request without routing state")
	}
	return t.roundTrip(req, st, nil) // the ReverseProxy reads req's headers after
}

// roundTrip relays req, whose URL points at the backend, for st. ob, if not
// nil, is the outbound that holds req (serveRelay's): req's header map then
// goes back to its pool once the head is sent (dropHeader), and fillHeader
// makes it again for a retry.
func (t *relay) roundTrip(req *http.Request, st *exchangeState, ob *outbound) (*http.Response, error) {
	route := st.route
	var sent func(*http.Request)
	if ob != nil {
		sent = dropHeader
	}
	// Read before the header map may be gone (it holds Idempotency-Key).
	again := repeatable(req)
	// A head that the agent would refuse is the client's doing: answer 431
	// rather than relay it and report a tunnel failure. A body read early
	// (st.body) was read only after serveRelay checked the head.
	if st.body == nil {
		if err := tunnel.CheckRequestHead(req); err != nil {
			e := NewError(CodeBadRequest, "The request headers are too large. Send fewer or smaller headers.", err)
			e.Status = http.StatusRequestHeaderFieldsTooLarge
			return nil, e
		}
	}
	start := time.Now()
	wait := min(t.g.cfg.streamWait(), route.timeout())
	var exclude tunnel.Session
	var lastErr error
	// broken are the agents (balanceKey) whose connection broke this
	// exchange after its request reached them; brokenErr is the first such
	// error, which the client gets if no other agent answers: the request
	// was sent, so it is not the group's no-connector.
	var broken []string
	var brokenErr error
	headTimeout := route.timeout()
	for attempt := range maxAttempts {
		p, err := t.g.registry.PickAvoiding(route.Group, exclude, broken)
		if err != nil && attempt == 0 {
			// Slow path: no agent of the group yet. Right after the
			// gateway started, the exchange may wait for the first one
			// (startgrace.go).
			again, cerr := t.g.holdForAgent(req.Context(), route.Group, wait)
			if cerr != nil {
				return nil, cerr
			}
			if again {
				p, err = t.g.registry.PickAvoiding(route.Group, exclude, broken)
			}
		}
		if err != nil {
			var e *Error
			switch {
			case brokenErr != nil:
				return nil, brokenErr
			case lastErr != nil && !errors.As(err, &e):
				return nil, lastErr
			case lastErr != nil && e.Err == nil:
				// No usable session is left (the group's last agent went
				// away or drained, maybe while this exchange waited for a
				// stream) and nothing was sent: the group's answer, 503
				// no-connector naming it; the log keeps the session's error.
				e.Err = lastErr
			}
			return nil, err
		}
		info := p.Session.Info()
		if st.body == nil && info.ProtocolVersion < tunnel.VersionExpectContinue {
			// An older agent does not hold a body back for 100 Continue
			// (serveRelay did not read a body with Expect): a small one
			// is read whole now (see readWhole), not once a stream is
			// taken.
			if ib, ok := req.Body.(*inboundBody); ok && req.ContentLength > 0 &&
				req.ContentLength <= tunnel.CoalesceLimit && len(req.Trailer) == 0 {
				if st.body, err = readWhole(ib, req.ContentLength, route.timeout()); err != nil {
					p.Done()
					return nil, err
				}
			}
		}
		// The first attempt's wait lives in st, which saves an allocation;
		// a retry gets a fresh one, as nothing may hold on to the first.
		var wctx *waitContext
		if attempt == 0 && st.wait.Context == nil {
			wctx = &st.wait
			wctx.init(req.Context(), wait)
			wctx.ob = ob
		} else {
			if brokenErr != nil {
				wait = min(wait, headTimeout) // what is left of the app's timeout
			}
			wctx = newWaitContext(req.Context(), wait)
			wctx.ob = ob
		}
		stream, err := p.Session.OpenStream(wctx)
		wctx.stop()
		if err != nil {
			p.Done()
			if req.Context().Err() != nil {
				return nil, req.Context().Err()
			}
			if brokenErr != nil {
				return nil, brokenErr // the answer is the break, not the wait for its retry
			}
			if errors.Is(err, context.DeadlineExceeded) {
				return nil, NewError(CodeOverloaded,
					"Every tunnel stream to the connector agent is busy. Try again in a moment.", err)
			}
			// Session closed or draining: nothing was sent, try another.
			exclude, lastErr = p.Session, err
			continue
		}
		st.agent, st.session = info.AgentName, info.ID
		if req.Header == nil && ob != nil {
			ob.fillHeader(st) // a retry of a request whose head went out
		}
		res, err := tunnel.RoundTrip(stream, req, &tunnel.Options{
			App:          route.App,
			RequestID:    st.requestID,
			BackendHTTP2: route.BackendHTTP2,
			HeadTimeout:  headTimeout,
			Done:         p.Done,
			HeadSent:     sent,
			Body:         st.body,
			// An older agent would not ask for a held-back body.
			ExpectContinue: info.ProtocolVersion >= tunnel.VersionExpectContinue,
			Informational:  informationalFor(st, info.ProtocolVersion),
		})
		if err != nil && req.Context().Err() == nil && grpcDeadlinePassed(req, start) {
			// A gRPC backend resets the stream without a status once the
			// client's deadline (sent as grpc-timeout) has passed. Report
			// the deadline, as the client's library does for such a reset,
			// rather than an unreachable backend.
			return nil, NewError(CodeBackendTimeout, "", err)
		}
		if err != nil && errors.Is(err, tunnel.ErrNotSent) && req.Context().Err() == nil {
			var be *tunnel.ClientBodyError
			if !errors.As(err, &be) {
				exclude, lastErr = p.Session, err
				continue
			}
		}
		if err != nil && errors.Is(err, tunnel.ErrNoResponse) && req.Context().Err() == nil && again {
			// The agent's connection (or the stream) broke after the
			// request reached it: the backend may have seen it, which a
			// request safe to repeat allows. Another agent answers it, as
			// nginx's proxy_next_upstream does, instead of a 502: not one
			// of the agents that broke it (its other sessions share their
			// fate), and within what is left of the app's timeout.
			if brokenErr == nil {
				brokenErr = err
			}
			broken = append(broken, balanceKey(info))
			headTimeout = route.timeout() - time.Since(start)
			if attempt+1 == maxAttempts || headTimeout <= 0 {
				return nil, brokenErr
			}
			t.g.log.Info("an agent's connection broke during an exchange; sending the request again over another agent",
				zap.String("request_id", st.requestID), zap.String("app", route.App), zap.String("agent", st.agent),
				zap.String("method", req.Method), zap.Error(err))
			exclude = p.Session
			continue
		}
		return res, err
	}
	if brokenErr != nil {
		return nil, brokenErr
	}
	return nil, lastErr
}

// repeatable reports whether req may be sent again after its stream broke
// before the response head: no body (it is not kept), no upgrade, and a
// method that is idempotent without side effects of its own (RFC 9110
// §9.2), or an Idempotency-Key header, which says the backend tells
// repeats apart (net/http's client has the same rule). PUT and DELETE are
// idempotent too but carry bodies or effects that a user would not want
// to see done twice by a proxy's choice.
func repeatable(req *http.Request) bool {
	if req.Body != nil && req.Body != http.NoBody || tunnel.IsUpgradeRequest(req) {
		return false
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, key := req.Header["Idempotency-Key"]
	_, xkey := req.Header["X-Idempotency-Key"]
	return key || xkey
}

// informationalFor is the Options.Informational of an exchange for st over
// a session of protocol version v: an older agent would not relay them.
func informationalFor(st *exchangeState, v uint32) tunnel.InformationalWriter {
	if v < tunnel.VersionInformational {
		return nil
	}
	return st.informational
}

// grpcDeadlinePassed reports whether req is a gRPC call whose grpc-timeout,
// counted from start, has passed. The backend received the call after start,
// so its deadline is later: a failure it caused by its deadline is always
// seen here after this one.
func grpcDeadlinePassed(req *http.Request, start time.Time) bool {
	if !isGRPC(req) {
		return false
	}
	d, ok := grpcTimeout(req.Header.Get("Grpc-Timeout"))
	return ok && time.Since(start) >= d
}

// grpcTimeout parses a grpc-timeout value: at most 8 digits and a unit
// (H, M, S, m, u or n). A value too large for a Duration is no deadline.
func grpcTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	var n int64
	for _, c := range v[:len(v)-1] {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if n > int64(math.MaxInt64/unit) {
		return 0, false
	}
	return time.Duration(n) * unit, true
}

// DefaultTimeout is the wait for a response head when a route sets none.
const DefaultTimeout = 85 * time.Second

func (r *Route) timeout() time.Duration {
	if r.Timeout <= 0 {
		return DefaultTimeout
	}
	return r.Timeout
}

// waitContext bounds how long OpenStream may wait for a stream. On a warm
// session OpenStream returns at once without asking for Done, so the timer
// (and the context.WithTimeout under it, registered with the request's
// context) is only made when it really waits: that saved 4 allocations and
// a timer per exchange. stop lets go of them, so that an exchange that
// waited for its stream does not keep them (about 250 bytes) while it waits
// for its response. The first Done also lets go of the relayed request's
// header map (dropHeader; roundTrip's fillHeader makes it again once a
// stream is taken): in a burst of long polls that wait for streams, the maps
// of waiting exchanges went to the pool only once sent, and the pool then
// held thousands. Safe for concurrent use.
type waitContext struct {
	context.Context // the request's
	deadline        time.Time
	ob              *outbound // serveRelay's relayed request, or nil; read-only

	mu      sync.Mutex
	timed   context.Context    // made by the first Done before stop; nil otherwise; guarded by mu
	cancel  context.CancelFunc // timed's; guarded by mu
	stopped atomic.Bool        // set by stop, under mu
}

func newWaitContext(parent context.Context, wait time.Duration) *waitContext {
	c := new(waitContext)
	c.init(parent, wait)
	return c
}

// init readies a zero waitContext.
func (c *waitContext) init(parent context.Context, wait time.Duration) {
	c.Context, c.deadline = parent, time.Now().Add(wait)
}

func (c *waitContext) Deadline() (time.Time, bool) {
	if d, ok := c.Context.Deadline(); ok && d.Before(c.deadline) {
		return d, true
	}
	return c.deadline, true
}

func (c *waitContext) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped.Load() {
		return closedChan // the wait is over
	}
	if c.timed == nil {
		c.timed, c.cancel = context.WithDeadline(c.Context, c.deadline)
		if c.ob != nil {
			// Done may be called from another goroutine (context's
			// propagateCancel does), but not once stop returned, and the
			// exchange reads the map only after stop.
			dropHeader(&c.ob.req)
		}
	}
	return c.timed.Done()
}

func (c *waitContext) Err() error {
	if err := c.Context.Err(); err != nil {
		return err
	}
	if !time.Now().Before(c.deadline) {
		return context.DeadlineExceeded
	}
	if c.stopped.Load() {
		return context.Canceled
	}
	return nil
}

// stop releases the timer, if one was made (a channel Done returned is then
// closed), and forgets it; later Done calls see a closed channel.
func (c *waitContext) stop() {
	c.mu.Lock()
	c.stopped.Store(true)
	cancel := c.cancel
	c.timed, c.cancel = nil, nil
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// sendGuard is the ResponseWriter of a relayed exchange (serveRelay): it
// cuts the exchange when one write or flush to the client does not return
// within the send timeout (the client stopped reading), as nginx's
// send_timeout does. Nothing else
// times out while a response is being written (IdleTimeout and
// ReadHeaderTimeout are for requests), so a client that stopped reading a
// download (a TCP window or an HTTP/2 stream window of 0) held its
// exchange, the tunnel stream, up to a flow-control window of body the
// gateway had received for it (about 1 MiB) and the agent's backend
// connection, for ever. Time spent waiting for the backend between writes
// does not count.
//
// A write or flush that blocks for stallAfter also counts against the
// gateway's budget of stalled exchanges (stallBudget), which cuts the
// longest stalled beyond it before their send timeout; one that blocks for
// behindAfter is charged the response bytes its exchange may hold, which
// the budget bounds too (stallbytes.go). An upgraded
// exchange's writes to its hijacked connection are watched by a sendGuard
// too (conn set; upgradeguard.go), and the response of a backend that did
// not switch protocols by the exchange's, which upgradeWriter embeds.
//
// Its cost per write is a clock read and three atomic operations, with no
// allocation: the timer comes from a pool (guardTimer) at the first write
// and goes back when the exchange ends; it is armed at the first write and
// re-arms itself while writes go on (a bulk download does not reset it at
// every write; with the budget it fires about once per behindAfter while
// writes go on), and a write that finds it disarmed (the exchange waited
// for the backend) arms it again.
type sendGuard struct {
	*statusRecorder
	h       *proxyHandler
	st      *exchangeState
	remote  string // the client's address: whose stalls it counts with (stallBudget)
	timeout time.Duration
	// conn is the hijacked connection of an upgraded exchange, whose
	// writes the guard watches; nil for a relayed response.
	conn *sendGuardConn
	// stallAfter is when a blocked write makes the exchange stalled (see
	// stallBudget): min(stallAfter, timeout); timeout without a budget.
	stallAfter time.Duration
	// since is when the write or flush under way began (tunnel.MonoNow); 0
	// between them; negated (-start) once the timer listed the write (it
	// blocked for behindAfter), so that end, which swaps it for 0, knows to
	// unlist it.
	// Written by the handler's goroutine and (to negate it) the timer's.
	since atomic.Int64
	watch *guardTimer // owned by the handler's goroutine; nil until the first write
	mu    sync.Mutex  // serialises cut with release

	// The three flags side by side: the sendGuard is part of every
	// exchange's one allocation, which this keeps at 448 bytes, a size
	// class (24 bytes of padding more took it to 480).
	//
	// armed: the timer is set. Cleared by the timer when it finds no write
	// under way; set again (and the timer reset) by whichever of begin and
	// check sees the other's change first.
	armed   atomic.Bool
	done    bool // the exchange ended: the writer is no longer ours; guarded by mu
	listed  bool // in the stallBudget's list; guarded by its mu
	stalled bool // listed and counted as stalled; guarded by the stallBudget's mu
	// sizeHint is the response body's length in heldUnit grains, for held;
	// 0: not known (a window). Set by the handler's goroutine (see held).
	sizeHint uint8

	// Guarded by the stallBudget's mu: the list of listed writes.
	prev, next *sendGuard
	stallStart int64        // tunnel.MonoNow when the listed write began
	client     *stallClient // the listed exchanges of remote's client; nil unless listed
}

// guardTimer is a timer that watches the sendGuard it is lent to.
type guardTimer struct {
	t *time.Timer
	g atomic.Pointer[sendGuard] // nil while in the pool
}

func (gt *guardTimer) fire() {
	if g := gt.g.Load(); g != nil {
		g.check(gt)
	}
}

// init readies a zero sendGuard for the exchange st written to rec.
func (g *sendGuard) init(h *proxyHandler, rec *statusRecorder, st *exchangeState, remote string) {
	g.statusRecorder, g.h, g.st, g.remote = rec, h, st, remote
	g.timeout = h.g.cfg.sendTimeout()
	g.stallAfter = g.timeout
	if h.stalls != nil {
		g.stallAfter = min(stallAfter, g.timeout)
	}
}

// begin marks the start of a write or flush and arms the timer unless it
// is armed.
func (g *sendGuard) begin() {
	g.since.Store(tunnel.MonoNow())
	if g.watch == nil {
		g.watch = g.h.guardTimer()
		g.watch.g.Store(g)
	}
	g.arm(g.lookAfter())
}

// lookAfter is when the timer first looks at a write: behindAfter with a
// budget (at most stallAfter), the send timeout without.
func (g *sendGuard) lookAfter() time.Duration {
	if g.h.stalls == nil {
		return g.timeout
	}
	return min(behindAfter, g.stallAfter)
}

// arm sets the timer to d unless it is set.
func (g *sendGuard) arm(d time.Duration) {
	if !g.armed.Load() && g.armed.CompareAndSwap(false, true) {
		g.watch.t.Reset(d)
	}
}

// end marks the end of the write or flush; the armed timer then finds
// nothing under way. A write the timer listed as stalled is unlisted (the
// slow path: it blocked for stallAfter). Swap costs what Store does.
func (g *sendGuard) end() {
	if g.since.Swap(0) < 0 {
		g.h.stalls.remove(g)
	}
}

func (g *sendGuard) Write(p []byte) (int, error) {
	g.begin()
	n, err := g.statusRecorder.Write(p)
	g.end()
	return n, err
}

// WriteInformational sends a 1xx through the guard: net/http flushes it
// at once. As on the final response (writeResponse), an app's Set-Cookie
// for one of the gateway's cookies does not reach the client: clients that
// keep cookies from a 1xx (RFC 6265 allows it) would take it.
func (g *sendGuard) WriteInformational(code int, header http.Header) {
	if vv, ok := header["Set-Cookie"]; ok && g.h.g.cfg.Preauth != nil {
		kept := preauth.DropGatewaySetCookies(vv)
		header = maps.Clone(header)
		if len(kept) == 0 {
			delete(header, "Set-Cookie")
		} else {
			header["Set-Cookie"] = kept
		}
	}
	g.begin()
	g.statusRecorder.WriteInformational(code, header)
	g.end()
}

// FlushError flushes through the guard: copyBody and its pauseFlusher
// flush with a ResponseController, which takes this method.
func (g *sendGuard) FlushError() error {
	g.begin()
	err := http.NewResponseController(g.statusRecorder).Flush()
	g.end()
	return err
}

// check runs on the timer's goroutine: a write or flush that began
// timeout ago and has not returned gets a write deadline in the past, which
// makes it fail at once (HTTP/1.1: the connection's; HTTP/2: the
// stream's), so that serveRelay cuts the exchange. One that began
// behindAfter ago is listed, charged the bytes its exchange may hold, and
// one that began stallAfter ago counted as stalled; either may put the
// budget over a bound, which then cuts exchanges of the gateway, as many
// as it takes (stallBudget). One that began later re-arms the timer for
// the rest.
func (g *sendGuard) check(gt *guardTimer) {
	for c := g.checkLocked(gt); c.g != nil; c = g.h.stalls.next() {
		g.h.stalls.cutOver(c)
	}
}

// checkLocked is check under g.mu; it returns the exchange that the budget
// cuts, if any (see stallBudget.list).
func (g *sendGuard) checkLocked(gt *guardTimer) stallCut {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.done {
		return stallCut{}
	}
	since := g.since.Load()
	if since == 0 {
		// Nothing under way (the exchange waits for the backend): disarm.
		// A write that began meanwhile and saw the timer armed is
		// caught here.
		g.armed.Store(false)
		if g.since.Load() != 0 {
			g.arm(g.lookAfter())
		}
		return stallCut{}
	}
	start := max(since, -since)
	blocked := time.Duration(tunnel.MonoNow() - start)
	if left := g.timeout - blocked; left > 0 {
		if g.h.stalls == nil {
			gt.t.Reset(left) // no budget: the send timeout is next
			return stallCut{}
		}
		// Look again within behindAfter, so that a write that follows
		// this one, once it returns, is timed from its start.
		look := min(behindAfter, g.stallAfter)
		if since < 0 {
			// Listed: counted as stalled once it has blocked for
			// stallAfter (again and again: promote does nothing twice,
			// and a late run of the timer must not skip it).
			if blocked >= g.stallAfter {
				gt.t.Reset(min(left, look))
				return g.h.stalls.promote(g, start)
			}
			gt.t.Reset(min(left, look, g.stallAfter-blocked))
			return stallCut{}
		}
		if wait := look - blocked; wait > 0 {
			gt.t.Reset(wait)
			return stallCut{}
		}
		gt.t.Reset(min(left, look))
		return g.h.stalls.list(g, since, blocked >= g.stallAfter)
	}
	g.cutWrite()
	fields := []zap.Field{zap.Duration("send_timeout", g.timeout), zap.String("request_id", g.st.requestID),
		zap.String("remote", g.remote)}
	if g.st.route != nil {
		fields = append(fields, zap.String("app", g.st.route.App))
	}
	if g.conn != nil {
		g.h.g.log.Info("client stopped reading: a write to the upgraded connection blocked for the send timeout; cutting it", fields...)
	} else {
		g.h.g.log.Info("client stopped reading: a write of the response blocked for the send timeout; cutting the exchange", fields...)
	}
	return stallCut{}
}

// cutWrite makes the write under way fail at once: a write deadline in the
// past (HTTP/1.1: the connection's; HTTP/2: the stream's; an upgrade: its
// hijacked connection's). g.mu is held.
func (g *sendGuard) cutWrite() {
	if g.conn != nil {
		_ = g.conn.Conn.SetWriteDeadline(time.Now())
		return
	}
	_ = http.NewResponseController(g.statusRecorder).SetWriteDeadline(time.Now())
}

// release ends the guard when the exchange's handler returns and gives
// its timer back.
func (g *sendGuard) release() {
	g.mu.Lock()
	g.done = true
	g.mu.Unlock()
	if g.since.Load() < 0 { // a write that never ended (it panicked)
		g.h.stalls.remove(g)
	}
	if gt := g.watch; gt != nil {
		g.watch = nil
		gt.t.Stop()
		gt.g.Store(nil)
		g.h.guards.Put(gt)
	}
}

// guardTimer takes a stopped timer from the pool, or makes one.
func (h *proxyHandler) guardTimer() *guardTimer {
	if gt, ok := h.guards.Get().(*guardTimer); ok {
		return gt
	}
	gt := new(guardTimer)
	gt.t = time.AfterFunc(time.Hour, gt.fire)
	gt.t.Stop()
	return gt
}
