package grpctunnel

import (
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sallyport/sallyport/tunnel"
)

// TokenUnspentError is the gateway's answer to an enrollment it refused
// before it spent the token's use: a status with code and msg (which says
// so in words) and an ErrorInfo (tunnel.ErrorDomain,
// tunnel.ReasonTokenUnspent) that tells the agent without the words.
func TokenUnspentError(code codes.Code, msg string) error {
	st := status.New(code, msg)
	withInfo, err := st.WithDetails(&errdetails.ErrorInfo{Domain: tunnel.ErrorDomain, Reason: tunnel.ReasonTokenUnspent})
	if err != nil {
		return st.Err() // cannot happen: an ErrorInfo always marshals
	}
	return withInfo.Err()
}

// SaysTokenUnspent reports whether err is a gRPC status with the ErrorInfo
// of TokenUnspentError.
func SaysTokenUnspent(err error) bool {
	st, ok := status.FromError(err)
	if !ok {
		return false
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == tunnel.ErrorDomain &&
			info.GetReason() == tunnel.ReasonTokenUnspent {
			return true
		}
	}
	return false
}
