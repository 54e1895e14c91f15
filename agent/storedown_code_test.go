package agent

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/grpctunnel"
	"github.com/sallyport/sallyport/tunnel/yamuxtunnel"
)

// TestGatewayStoreDownByCode: a gateway of this version refuses a session
// it cannot check (its database does not answer) with a code of its own,
// which the transports return as tunnel.ErrUnavailable: the agent
// recognises it by the code, whatever the words, and does not take it for
// a refused credential. Before, only the words were looked at.
func TestGatewayStoreDownByCode(t *testing.T) {
	addr, cfg := refusingSessionGateway(t, fmt.Errorf("%w; the agent retries by itself", tunnel.ErrUnavailable))
	_, err := yamuxtunnel.Dial(context.Background(), yamuxtunnel.DialConfig{Addr: addr, TLS: cfg})
	if !isGatewayStoreDown(err) || isUnauthenticated(err) || isCertRefused(err) || !strings.Contains(err.Error(), storeDownAnswer) {
		t.Fatalf("yamux session refused by code: %v; isGatewayStoreDown %v, isUnauthenticated %v, isCertRefused %v",
			err, isGatewayStoreDown(err), isUnauthenticated(err), isCertRefused(err))
	}
	for _, e := range []error{
		// The code without the words (a gateway that words it otherwise).
		tunnel.Unavailable("the gateway cannot check this agent now"),
		// As grpctunnel.Dial reports an UNAVAILABLE "unavailable: …".
		fmt.Errorf("connect to gateway 127.0.0.1:1: %w", tunnel.Unavailable("the gateway closed the session: connector c1: "+
			"revocation not checked")),
	} {
		if !isGatewayStoreDown(e) || isUnauthenticated(e) {
			t.Errorf("%v: isGatewayStoreDown %v, isUnauthenticated %v", e, isGatewayStoreDown(e), isUnauthenticated(e))
		}
	}
	// A refused credential is still one, with or without the code nearby.
	if e := fmt.Errorf("%w: unauthenticated: connector c1 is not enrolled at this gateway", grpctunnel.ErrUnauthenticated); isGatewayStoreDown(e) {
		t.Errorf("%v: taken for the gateway's database not answering", e)
	}
}
