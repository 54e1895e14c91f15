package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"

	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/sallyport/sallyport/internal/store"
	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
)

// holdStore holds every UseToken until the test lets it proceed.
type holdStore struct {
	Store
	entered chan struct{}
	proceed chan struct{}
}

func (s *holdStore) UseToken(ctx context.Context, hash [32]byte, now time.Time) (store.Token, error) {
	s.entered <- struct{}{}
	<-s.proceed
	return s.Store.UseToken(ctx, hash, now)
}

// TestEnrollLimitHoldsForParallelAttempts: wrong tokens sent from one
// address in parallel (many streams at once) get no more guesses than sent
// one after the other: the limit's failures are counted before the next
// attempt is judged.
func TestEnrollLimitHoldsForParallelAttempts(t *testing.T) {
	mem, err := store.OpenMemory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	hs := &holdStore{Store: mem, entered: make(chan struct{}), proceed: make(chan struct{})}
	g, err := New(Config{TunnelTLS: &tls.Config{}, Store: hs})
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 4000}})
	const n = 8
	codes := make(chan grpccodes.Code, n)
	started := make(chan struct{})
	for range n {
		go func() {
			started <- struct{}{}
			_, err := (&enrollService{g: g}).Enroll(ctx, &tunnelv1.EnrollRequest{Token: "spt_guess", Csr: csr})
			codes <- status.Code(err)
		}()
	}
	// Every attempt is under way before the first token check can fail.
	for range n {
		<-started
	}
	got := map[grpccodes.Code]int{}
	for done := 0; done < n; {
		select {
		case <-hs.entered:
			hs.proceed <- struct{}{}
		case c := <-codes:
			got[c]++
			done++
		}
	}
	max := g.limiter.maxFailures()
	if got[grpccodes.Unauthenticated] != max || got[grpccodes.ResourceExhausted] != n-max {
		t.Fatalf("answers %v: want %d token checks (Unauthenticated), then %d refusals (ResourceExhausted)", got, max, n-max)
	}
	if len(g.limiter.turns) != 0 {
		t.Fatalf("%d turns left behind", len(g.limiter.turns))
	}
}
