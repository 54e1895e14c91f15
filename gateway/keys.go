package gateway

import (
	"context"

	keysv1 "github.com/sallyport/sallyport/proto/sallyport/keys/v1"
)

// keysServer answers agents that verify assertions (verify_assertion) with
// the public assertion keys, on the tunnel listener.
type keysServer struct {
	keysv1.UnimplementedKeysServiceServer
	g *Gateway
}

func (k *keysServer) GetAssertionKeys(context.Context, *keysv1.GetAssertionKeysRequest) (*keysv1.GetAssertionKeysResponse, error) {
	if k.g.cfg.Preauth == nil {
		return &keysv1.GetAssertionKeysResponse{}, nil
	}
	return &keysv1.GetAssertionKeysResponse{Jwks: k.g.cfg.Preauth.JWKS()}, nil
}
