package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/sallyport/sallyport/tunnel"
)

// Codes ClassifyBackendError returns; the gateway sends them as
// X-Sallyport-Error (see DESIGN.md).
const (
	CodeBackendNotAllowed  = "backend-not-allowed"
	CodeBackendUnreachable = "backend-unreachable"
	CodeBackendTimeout     = "backend-timeout"
	CodeAssertionRejected  = "assertion-rejected"
	// CodeBackend1xxLimit: the backend sent more informational (1xx)
	// responses than one exchange relays (gateways of protocol version 3
	// know it; older ones never ask for 1xx, so they never see it).
	CodeBackend1xxLimit = "backend-1xx-limit"
)

// ClassifyBackendError maps an error from calling a backend to the code the
// gateway reports and a short message saying what happened and what to check.
// It returns "", "" for a nil error.
//
// Order matters: a dial that timed out also satisfies
// errors.Is(err, context.DeadlineExceeded) but means the backend could not be
// reached, so dial and TLS failures are recognised before timeouts.
func ClassifyBackendError(err error) (code, msg string) {
	if err == nil {
		return "", ""
	}

	var ae *AssertionError
	if errors.As(err, &ae) {
		return CodeAssertionRejected, "The agent refused the request: " + ae.Err.Error() + "."
	}

	var notAllowed *NotAllowedError
	if errors.As(err, &notAllowed) {
		return CodeBackendNotAllowed, fmt.Sprintf("The agent refused to call %s: it is not in the agent's allow list. Add it to \"allow\" in the agent config if it is meant to be published.", notAllowed.HostPort)
	}

	var flood *tunnel.InformationalLimitError
	if errors.As(err, &flood) {
		return CodeBackend1xxLimit, fmt.Sprintf("The backend sent %d informational (1xx) responses with %d bytes of headers before its final response; "+
			"the agent relays at most %d, with %d KiB of headers in all, and gave up on the request. Check the app: it should send its final response after a few 1xx.",
			flood.Count, flood.Bytes, tunnel.MaxInformational, tunnel.MaxInformationalBytes>>10)
	}

	var stall *tunnel.BodyStallError
	if errors.As(err, &stall) {
		return CodeBackendTimeout, fmt.Sprintf("The backend read none of the request body for %s; the agent gave up on the request. "+
			"Check the app: it should read the request body it is sent, or answer.", stall.After)
	}

	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return CodeBackendUnreachable, fmt.Sprintf("The agent could not resolve %s (%s). Check the app's backend host name and the agent's DNS.", dnsErr.Name, dnsErrorReason(dnsErr))
	}

	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		addr := opAddr(opErr)
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			return CodeBackendUnreachable, fmt.Sprintf("The backend %s refused the connection. Check that the app is running and listening on that address.", addr)
		case opErr.Timeout():
			return CodeBackendUnreachable, fmt.Sprintf("Connecting to the backend %s timed out. Check that the address is right and that no firewall drops traffic from the agent.", addr)
		default:
			return CodeBackendUnreachable, fmt.Sprintf("The agent could not connect to the backend %s: %v. Check the address and the agent's network.", addr, opErr.Err)
		}
	}

	if m, ok := tlsFailure(err); ok {
		return CodeBackendUnreachable, m
	}

	if errors.Is(err, context.DeadlineExceeded) {
		return CodeBackendTimeout, "The backend did not answer in time. Check the app's health, or raise the app's timeout if it is just slow."
	}

	return CodeBackendUnreachable, fmt.Sprintf("Calling the backend failed: %v.", err)
}

// tlsFailure recognises a failed TLS handshake or certificate check.
func tlsFailure(err error) (string, bool) {
	const check = "Check the backend TLS settings of the agent (CA file, server name) or the backend's certificate."
	var (
		verifyErr  *tls.CertificateVerificationError
		unknownCA  x509.UnknownAuthorityError
		hostErr    x509.HostnameError
		invalidErr x509.CertificateInvalidError
		recordErr  tls.RecordHeaderError
		alertErr   tls.AlertError
		opErr      *net.OpError
	)
	switch {
	case errors.As(err, &hostErr):
		return fmt.Sprintf("The backend's TLS certificate is not valid for %q. %s", hostErr.Host, check), true
	case errors.As(err, &unknownCA):
		return "The backend's TLS certificate is signed by an authority the agent does not trust. " + check, true
	case errors.As(err, &invalidErr), errors.As(err, &verifyErr):
		return fmt.Sprintf("The backend's TLS certificate was rejected: %v. %s", err, check), true
	case errors.As(err, &recordErr):
		return "The backend did not answer with TLS. Check whether the app's backend URL should be http:// instead of https://.", true
	case errors.As(err, &alertErr):
		return fmt.Sprintf("The TLS handshake with the backend failed: %v. %s", alertErr, check), true
	case errors.As(err, &opErr) && (opErr.Op == "remote error" || opErr.Op == "local error"):
		// crypto/tls reports alerts on TCP as *net.OpError with these Ops.
		return fmt.Sprintf("The TLS handshake with the backend failed: %v. %s", opErr, check), true
	}
	return "", false
}

// opAddr names the far end of a failed dial.
func opAddr(e *net.OpError) string {
	if e.Addr != nil {
		return e.Addr.String()
	}
	return "(unknown address)"
}

func dnsErrorReason(e *net.DNSError) string {
	switch {
	case e.IsNotFound:
		return "no such host"
	case e.IsTimeout:
		return "DNS lookup timed out"
	default:
		return e.Err
	}
}
