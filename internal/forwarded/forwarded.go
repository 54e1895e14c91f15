// Package forwarded carries what a trusted proxy in front of the gateway
// (public.trusted_proxies) said about the client's connection, for the
// parts of the gateway that build URLs, cookies and X-Forwarded-Proto.
package forwarded

import (
	"context"
	"net/http"
)

type httpsKey struct{}

// WithHTTPS returns a copy of r marked as reached over HTTPS: the client
// spoke HTTPS to a trusted proxy, which passed the request on in plain HTTP.
func WithHTTPS(r *http.Request) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), httpsKey{}, true))
}

// HTTPS reports whether the client reached the gateway over HTTPS: directly
// (r.TLS) or through a trusted proxy (WithHTTPS).
func HTTPS(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	v, _ := r.Context().Value(httpsKey{}).(bool)
	return v
}
