package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"syscall"

	"github.com/sallyport/sallyport/gateway/preauth"
	"github.com/sallyport/sallyport/internal/htmlpage"
	"github.com/sallyport/sallyport/tunnel"
)

// Codes of the errors the gateway answers itself, sent in the
// X-Sallyport-Error response header.
const (
	CodeNoRoute            = "no-route"            // 404: no app for this host and path
	CodeNoConnector        = "no-connector"        // 503: no agent of the app's group is connected
	CodeBackendUnreachable = "backend-unreachable" // 502: the agent could not reach the backend
	CodeBackendNotAllowed  = "backend-not-allowed" // 502: the backend is not in the agent's allow list
	CodeBackendTimeout     = "backend-timeout"     // 504: no response head within the app's timeout
	CodeTunnelFailed       = "tunnel-failed"       // 502: the tunnel to the agent broke
	CodeBackend1xxLimit    = "backend-1xx-limit"   // 502: the backend sent informational responses without end
	CodeOverloaded         = "overloaded"          // 503: the gateway sheds load
	CodeBadRequest         = "bad-request"         // 400: malformed request
	// Pre-authentication (apps with preauth: oidc).
	CodeAuthProviderUnreachable = preauth.CodeProviderUnreachable // 502: the OIDC provider could not be reached
	CodeUnauthenticated         = preauth.CodeUnauthenticated     // 401: no valid session or bearer token
	CodeForbidden               = preauth.CodeForbidden           // 403: signed in, but not allowed by the app's policy
	CodeStateMismatch           = preauth.CodeStateMismatch       // 400: the sign-in callback does not match this browser's sign-in
	CodeSignInFailed            = preauth.CodeSignInFailed        // 403: the provider refused or its answer did not verify
	// CodeAssertionRejected: the agent refused the exchange because its
	// identity assertion was missing or invalid (verify_assertion).
	CodeAssertionRejected = "assertion-rejected" // 502
	// CodeClientClosed marks an exchange the client gave up on. Its status
	// (StatusClientClosed) is only logged: nobody is left to read it.
	CodeClientClosed = "client-closed"
)

// StatusClientClosed is the status logged for CodeClientClosed (nginx's 499).
const StatusClientClosed = 499

// ErrorHeader carries the error code on answers the gateway gives itself.
const ErrorHeader = "X-Sallyport-Error"

// codeInfo is what the gateway says about one error code.
type codeInfo struct {
	status int
	grpc   int    // gRPC status code for gRPC clients
	msg    string // default message: what happened and what to do
}

// gRPC status codes used in answers to gRPC clients.
const (
	grpcCanceled         = 1
	grpcDeadlineExceeded = 4
	grpcPermissionDenied = 7
	grpcUnimplemented    = 12
	grpcUnauthenticated  = 16
	grpcInternal         = 13
	grpcUnavailable      = 14
)

var codes = map[string]codeInfo{
	CodeNoRoute: {http.StatusNotFound, grpcUnimplemented,
		"No application is published at this address. Check the URL, or ask the administrator to add an app for this host and path."},
	CodeNoConnector: {http.StatusServiceUnavailable, grpcUnavailable,
		"No connector agent for this application is connected. Start an agent with a token of the application's connector group."},
	CodeBackendUnreachable: {http.StatusBadGateway, grpcUnavailable,
		"The connector agent could not reach the application's backend. Check that the backend is running and reachable from the agent's host."},
	CodeBackendNotAllowed: {http.StatusBadGateway, grpcUnavailable,
		"The connector agent is not allowed to call the application's backend. Add the backend to the agent's allow list."},
	CodeBackendTimeout: {http.StatusGatewayTimeout, grpcDeadlineExceeded,
		"The application's backend did not answer in time. Try again later, or raise the app's timeout if it is expected to be slow."},
	CodeTunnelFailed: {http.StatusBadGateway, grpcUnavailable,
		"The connection to the connector agent failed during the request. Try again; if it keeps failing, check the agent's logs."},
	CodeBackend1xxLimit: {http.StatusBadGateway, grpcUnavailable,
		fmt.Sprintf("The application's backend sent more informational (1xx) responses before its answer than the gateway relays "+
			"(at most %d, with %d KiB of headers in all), so the request was stopped. Check the backend: after a few 1xx it should send its final response.",
			tunnel.MaxInformational, tunnel.MaxInformationalBytes>>10)},
	CodeOverloaded: {http.StatusServiceUnavailable, grpcUnavailable,
		"The gateway is overloaded. Try again in a moment."},
	CodeBadRequest: {http.StatusBadRequest, grpcInternal,
		"The request is malformed. Check the URL and headers the client sends."},
	CodeAuthProviderUnreachable: {http.StatusBadGateway, grpcUnavailable,
		"The sign-in provider could not be reached. Try again in a moment; if it persists, tell the administrator."},
	CodeUnauthenticated: {http.StatusUnauthorized, grpcUnauthenticated,
		"Sign-in required. Send a bearer token from the application's identity provider, or sign in with a browser."},
	CodeForbidden: {http.StatusForbidden, grpcPermissionDenied,
		"You are not allowed to use this application."},
	CodeStateMismatch: {http.StatusBadRequest, grpcInternal,
		"This sign-in cannot be completed. Start over."},
	CodeSignInFailed: {http.StatusForbidden, grpcPermissionDenied,
		"The sign-in did not complete. Try again."},
	CodeAssertionRejected: {http.StatusBadGateway, grpcUnauthenticated,
		"The connector agent refused the request because its identity assertion was missing or not valid. Check that the app requires sign-in and that the gateway's keys are reachable by the agent."},
	CodeClientClosed: {StatusClientClosed, grpcCanceled,
		"The client closed the request before the answer was ready."},
}

// Error is a failure that the gateway answers itself with WriteError.
type Error struct {
	Code   string // one of the Code constants
	Status int    // HTTP status of the answer
	Msg    string // human message shown to the user: what happened, what to do
	Err    error  // underlying cause, for logs only (never shown to the user); may be nil
	// LinkURL and LinkText, if set, offer the next step (sign out, start
	// over) on the page; JSON answers carry LinkURL as "link".
	LinkURL, LinkText string
}

// NewError returns an Error with code's status. An empty msg means code's
// default message. An unknown code gets status 502.
func NewError(code, msg string, err error) *Error {
	info, ok := codes[code]
	if !ok {
		info = codeInfo{status: http.StatusBadGateway}
	}
	if msg == "" {
		msg = info.msg
	}
	return &Error{Code: code, Status: info.status, Msg: msg, Err: err}
}

// noConnectorError is returned when group has no session to pick.
func noConnectorError(group string, draining bool) *Error {
	msg := "No connector agent of group " + strconv.Quote(group) +
		" is connected. Start an agent with a token of that group."
	if draining {
		msg = "Every connector agent of group " + strconv.Quote(group) +
			" is shutting down. Try again in a moment, or start another agent with a token of that group."
	}
	return NewError(CodeNoConnector, msg, nil)
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Code + ": " + e.Err.Error()
	}
	return e.Code + ": " + e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// ErrorFor classifies an error returned by the tunnel transport (or the
// registry) into the Error to answer, looking through wrapped errors:
//   - an *Error is used as it is;
//   - a *tunnel.ExchangeError (reported by the agent) keeps its code (an
//     unknown code becomes tunnel-failed); its message stays in the wrapped
//     error for the logs, since it names internal addresses;
//   - context.Canceled means the client went away: client-closed;
//   - a *tunnel.ClientBodyError (the request body could not be read) is
//     client-closed when the client reset its connection (it is gone: an
//     upload aborted by the user), otherwise bad-request;
//   - context.DeadlineExceeded and tunnel.ErrHeadTimeout are backend-timeout;
//   - anything else is tunnel-failed.
//
// The result wraps err (except for an *Error found in it). ErrorFor returns
// nil for a nil error.
func ErrorFor(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var xe *tunnel.ExchangeError
	if errors.As(err, &xe) {
		code := xe.Code
		if _, known := codes[code]; !known || code == CodeClientClosed {
			code = CodeTunnelFailed
		}
		// The agent's message names internal hosts and addresses: it goes to
		// the gateway's log (through err), and users see the code's default.
		return NewError(code, "", err)
	}
	var be *tunnel.ClientBodyError
	switch {
	case errors.Is(err, context.Canceled):
		return NewError(CodeClientClosed, "", err)
	case errors.As(err, &be) && errors.Is(be.Err, syscall.ECONNRESET):
		// Nobody is left to read a 400, and the upload is not malformed.
		return NewError(CodeClientClosed, "", err)
	case errors.As(err, &be):
		return NewError(CodeBadRequest, "The request body could not be read. Check the client and try again.", err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, tunnel.ErrHeadTimeout):
		return NewError(CodeBackendTimeout, "", err)
	}
	return NewError(CodeTunnelFailed, "", err)
}

// WriteError answers r with e: the X-Sallyport-Error header, no caching, and
// a short page naming the cause and the request id (taken from r's
// X-Request-Id header, which the gateway sets before routing):
//   - gRPC requests (Content-Type application/grpc…) get what a gRPC server
//     would send: HTTP 200, no body, grpc-status and grpc-message;
//   - clients that prefer application/json get {"error","message","request_id"};
//   - everyone else gets a small HTML page.
//
// e.Err is never shown. WriteError must run before anything of the response
// was written.
func WriteError(w http.ResponseWriter, r *http.Request, e *Error) {
	if e == nil {
		e = NewError(CodeTunnelFailed, "", nil)
	}
	status := e.Status
	if status < 100 || status > 999 {
		status = http.StatusBadGateway
	}
	msg := e.Msg
	if msg == "" {
		msg = codes[e.Code].msg
	}
	id := r.Header.Get(RequestIDHeader)
	h := w.Header()
	h.Set(ErrorHeader, e.Code)
	h.Set("Cache-Control", "no-store")
	if id != "" && h.Get(RequestIDHeader) == "" {
		h.Set(RequestIDHeader, id)
	}

	if isGRPC(r) {
		code := grpcUnavailable
		if info, ok := codes[e.Code]; ok {
			code = info.grpc
		}
		h.Set("Content-Type", "application/grpc")
		h.Set("Grpc-Status", strconv.Itoa(code))
		h.Set("Grpc-Message", grpcPercentEncode(msg))
		w.WriteHeader(http.StatusOK) // a trailers-only gRPC response
		return
	}

	var body bytes.Buffer
	if prefersJSON(r.Header.Values("Accept")) {
		h.Set("Content-Type", "application/json")
		_ = json.NewEncoder(&body).Encode(struct {
			Error     string `json:"error"`
			Message   string `json:"message"`
			RequestID string `json:"request_id"`
			Link      string `json:"link,omitempty"`
		}{e.Code, msg, id, e.LinkURL})
	} else {
		h.Set("Content-Type", "text/html; charset=utf-8")
		writeErrorPage(&body, status, e.Code, msg, id, e.LinkURL, e.LinkText)
	}
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(body.Len()))
	w.WriteHeader(status)
	_, _ = w.Write(body.Bytes())
}

// writeErrorPage writes the HTML error page (htmlpage says why it is not
// a template).
func writeErrorPage(b *bytes.Buffer, status int, code, msg, requestID, linkURL, linkText string) {
	title := strconv.Itoa(status) + " " + htmlpage.Text(http.StatusText(status))
	b.WriteString(`<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="robots" content="noindex"><title>` + title + `</title></head>
<body style="font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em">
<h1>` + title + `</h1>
<p>` + htmlpage.Text(msg) + "</p>\n")
	if linkURL != "" {
		b.WriteString(`<p><a href="` + htmlpage.URL(linkURL) + `">` + htmlpage.Text(linkText) + "</a></p>\n")
	}
	b.WriteString(`<p style="color:#666"><small>Sallyport error <code>` + htmlpage.Text(code) + `</code>`)
	if requestID != "" {
		b.WriteString(` · request id <code>` + htmlpage.Text(requestID) + `</code>`)
	}
	b.WriteString("</small></p>\n</body>\n</html>\n")
}

// isGRPC reports whether r is a gRPC request (Content-Type application/grpc,
// application/grpc+proto, application/grpc-web…).
func isGRPC(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	return len(ct) >= len("application/grpc") && strings.EqualFold(ct[:len("application/grpc")], "application/grpc")
}

// prefersJSON reports whether the Accept header values rank application/json
// above text/html. Each of the two types takes the q of the most specific
// range that matches it (RFC 9110, section 12.5.1); a tie goes to HTML.
func prefersJSON(accept []string) bool {
	jsonQ, jsonSpec := 0.0, -1
	htmlQ, htmlSpec := 0.0, -1
	for _, v := range accept {
		for _, part := range strings.Split(v, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil {
				continue
			}
			q := 1.0
			if s, ok := params["q"]; ok {
				f, err := strconv.ParseFloat(s, 64)
				if err != nil || f < 0 || f > 1 {
					continue
				}
				q = f
			}
			if spec := rangeSpecificity(mt, "application", "json"); spec > jsonSpec {
				jsonQ, jsonSpec = q, spec
			}
			if spec := rangeSpecificity(mt, "text", "html"); spec > htmlSpec {
				htmlQ, htmlSpec = q, spec
			}
		}
	}
	return jsonQ > 0 && jsonQ > htmlQ
}

// rangeSpecificity returns how specifically the media range mr (lower case)
// matches typ/sub: 2 exact, 1 typ/*, 0 */*, -1 no match.
func rangeSpecificity(mr, typ, sub string) int {
	switch mr {
	case typ + "/" + sub:
		return 2
	case typ + "/*":
		return 1
	case "*/*":
		return 0
	}
	return -1
}

// grpcPercentEncode encodes s as the gRPC protocol wants for grpc-message:
// bytes outside printable ASCII, and '%', as %XX.
func grpcPercentEncode(s string) string {
	return percentEncode(s, func(c byte) bool { return c >= 0x20 && c <= 0x7e && c != '%' })
}
