package gateway

import (
	"net"
	"testing"
	"time"
)

// TestShutdownClosesFreshAdminConns: a connection to the admin listener
// that has not sent a request (a TCP health check, a client that connects
// ahead) has no call to finish, and must not hold the end of the stop:
// net/http's Shutdown counts such a connection as busy for its first 5 s,
// so every stop waited the whole adminStopWait for it.
func TestShutdownClosesFreshAdminConns(t *testing.T) {
	old := adminStopWait
	adminStopWait = time.Hour
	t.Cleanup(func() { adminStopWait = old })
	g, cancel, served := startShutdownGateway(t, Config{})
	c, err := net.Dial("tcp", g.AdminAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A request on another connection: by then the server has accepted c.
	if _, err := getStatus(g.AdminAddr().String(), "/healthz"); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(time.Minute): // a guard, not a measure: adminStopWait is an hour
		t.Fatal("Serve still waits for an admin connection that sent no request")
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("the admin connection without a request is still open after the stop")
	}
}
