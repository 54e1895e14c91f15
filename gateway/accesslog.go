package gateway

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// statusRecorder wraps the http.ResponseWriter of one exchange and records
// the status and body bytes for the access log. It is used by the handler
// goroutine only (ReverseProxy writes from the handler goroutine), so its
// fields need no lock.
//
// Unwrap lets http.ResponseController reach Flush, EnableFullDuplex,
// SetReadDeadline and the like on the wrapped writer. Hijack is implemented
// here (and not only reached through Unwrap) to note that the connection
// was taken over: ReverseProxy hijacks for a protocol upgrade and writes the
// 101 itself on the raw connection. Bytes written on a hijacked connection
// are not counted.
type statusRecorder struct {
	http.ResponseWriter
	status   int       // first final status written (or 101); 0 until then
	bytes    int64     // body bytes written through Write
	hijacked bool      // Hijack succeeded
	headAt   time.Time // when status was recorded (for the metrics); zero until then
}

func newStatusRecorder(w http.ResponseWriter) *statusRecorder {
	return &statusRecorder{ResponseWriter: w}
}

// WriteHeader records the first final status. Informational statuses (100
// Continue, 103 Early Hints…) may precede it and are not recorded, except
// 101 Switching Protocols, which is final for an upgrade.
func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		s.status, s.headAt = code, time.Now()
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status, s.headAt = http.StatusOK, time.Now()
	}
	n, err := s.ResponseWriter.Write(p)
	s.bytes += int64(n)
	return n, err
}

// Unwrap returns the wrapped writer for http.ResponseController.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Hijack takes over the connection through the wrapped writer.
func (s *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(s.ResponseWriter).Hijack()
	if err == nil {
		s.hijacked = true
	}
	return c, rw, err
}

// Status is the status the client got: the recorded one, else 101 for a
// hijacked (upgraded) connection, else 200 (what net/http sends when the
// handler wrote nothing).
func (s *statusRecorder) Status() int {
	switch {
	case s.status != 0:
		return s.status
	case s.hijacked:
		return http.StatusSwitchingProtocols
	}
	return http.StatusOK
}

// BytesWritten is the number of body bytes written.
func (s *statusRecorder) BytesWritten() int64 { return s.bytes }

// countingBody wraps a request body and counts the bytes read from it. The
// count is atomic: the transport may still be reading the body in its own
// goroutine while the handler logs the exchange.
type countingBody struct {
	rc io.ReadCloser
	n  atomic.Int64
}

func newCountingBody(rc io.ReadCloser) *countingBody { return &countingBody{rc: rc} }

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.n.Add(int64(n))
	return n, err
}

func (b *countingBody) Close() error { return b.rc.Close() }

// N is the number of bytes read so far.
func (b *countingBody) N() int64 { return b.n.Load() }

// accessFields is one line of the access log.
type accessFields struct {
	App       string        // app name; empty when no route matched
	Method    string        // request method
	Path      string        // URL path; a query string is cut off
	Status    int           // status sent to the client
	BytesIn   int64         // request body bytes read
	BytesOut  int64         // response body bytes written
	Duration  time.Duration // from request start to the end of the response
	Agent     string        // name of the agent that carried the exchange
	Session   string        // tunnel session id
	RequestID string        // request id
	Remote    string        // client address
	ErrCode   string        // X-Sallyport-Error code, if the gateway answered itself
	User      string        // signed-in user's subject (pre-authenticated routes), else empty
	Email     string        // the user's email, when the provider vouched for it
}

// accessLogger is the access log's logger: log's, named "access", without
// the caller, which is always the same line of the gateway and cost about
// a sixth of a line (zap captures it from the stack).
func accessLogger(log *zap.Logger) *zap.Logger {
	return log.Named("access").WithOptions(zap.WithCaller(false))
}

// logAccess writes one info line for an exchange. The path goes without its
// query string: queries often hold tokens and other secrets. "user" and
// "email" (who signed in, on pre-authenticated routes) and "error" appear
// only when set.
func logAccess(log *zap.Logger, f accessFields) {
	ce := log.Check(zapcore.InfoLevel, "access")
	if ce == nil {
		return
	}
	path, _, _ := strings.Cut(f.Path, "?")
	fields := [...]zap.Field{
		zap.String("app", f.App),
		zap.String("method", f.Method),
		zap.String("path", path),
		zap.Int("status", f.Status),
		zap.Int64("bytes_in", f.BytesIn),
		zap.Int64("bytes_out", f.BytesOut),
		zap.Duration("duration", f.Duration),
		zap.String("agent", f.Agent),
		zap.String("session", f.Session),
		zap.String("request_id", f.RequestID),
		zap.String("remote", f.Remote),
		{}, {}, {}, // the optional fields, appended below
	}
	n := len(fields) - 3
	for _, o := range [...]struct{ key, val string }{{"user", f.User}, {"email", f.Email}, {"error", f.ErrCode}} {
		if o.val != "" {
			fields[n] = zap.String(o.key, o.val)
			n++
		}
	}
	ce.Write(fields[:n]...)
}
