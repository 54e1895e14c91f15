// Package forwarded carries what a trusted proxy in front of the gateway
// (public.trusted_proxies) said about the client's connection, for the
// parts of the gateway that build URLs, cookies and X-Forwarded-* headers.
package forwarded

import (
	"context"
	"net/http"
)

type infoKey struct{}

// info is what a trusted proxy said; one context value for all of it.
type info struct {
	https  bool
	prefix string
}

func from(r *http.Request) info {
	v, _ := r.Context().Value(infoKey{}).(info)
	return v
}

func with(r *http.Request, i info) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), infoKey{}, i))
}

// WithHTTPS returns a copy of r marked as reached over HTTPS: the client
// spoke HTTPS to a trusted proxy, which passed the request on in plain HTTP.
func WithHTTPS(r *http.Request) *http.Request {
	i := from(r)
	i.https = true
	return with(r, i)
}

// HTTPS reports whether the client reached the gateway over HTTPS: directly
// (r.TLS) or through a trusted proxy (WithHTTPS).
func HTTPS(r *http.Request) bool {
	return r.TLS != nil || from(r).https
}

// WithPrefix returns a copy of r carrying the path prefix a trusted proxy
// removed before passing the request on (its X-Forwarded-Prefix), for the
// app to build its links with.
func WithPrefix(r *http.Request, prefix string) *http.Request {
	i := from(r)
	i.prefix = prefix
	return with(r, i)
}

// Prefix returns the path prefix a trusted proxy said it removed, "" when
// none did.
func Prefix(r *http.Request) string { return from(r).prefix }
