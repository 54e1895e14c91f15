package preauth

import (
	"errors"
	"net/http"
)

// Error codes this package answers with; the gateway's error table
// (gateway/errors.go) has the same codes.
const (
	CodeProviderUnreachable = "auth-provider-unreachable" // 502
	CodeUnauthenticated     = "unauthenticated"           // 401
	CodeForbidden           = "forbidden"                 // 403
	CodeStateMismatch       = "state-mismatch"            // 400
	CodeSignInFailed        = "sign-in-failed"            // 403
)

// Error is a refusal for the gateway to answer with its error page.
type Error struct {
	Code   string
	Status int
	Msg    string // shown to the user
	// LinkURL and LinkText, if set, offer the next step (sign out, start
	// over) on the page.
	LinkURL, LinkText string
	// WWWAuthenticate is sent with 401 answers.
	WWWAuthenticate string
	Err             error // for logs only
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Code + ": " + e.Err.Error()
	}
	return e.Code + ": " + e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// ErrHandled is returned when the answer was already written (a redirect to
// the provider, a sign-out page).
var ErrHandled = errors.New("preauth: answered")

func unreachable(err error) *Error {
	return &Error{Code: CodeProviderUnreachable, Status: http.StatusBadGateway, Err: err,
		Msg: "The sign-in provider could not be reached. Try again in a moment; if it persists, tell the administrator."}
}

func unauthenticated(msg, wwwAuth string, err error) *Error {
	return &Error{Code: CodeUnauthenticated, Status: http.StatusUnauthorized, Msg: msg, WWWAuthenticate: wwwAuth, Err: err,
		LinkURL: "/", LinkText: "Sign in"}
}
