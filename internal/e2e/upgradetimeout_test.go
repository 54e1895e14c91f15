package e2e

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/testrig"
)

// The send timeouts of upgraded connections: a WebSocket whose client (or
// backend) stopped reading while the other end kept sending held its
// exchange for ever, with the tunnel stream and megabytes of buffered
// data, on every transport. The gateway's public.send_timeout now covers
// its writes to the client, and the agent's send timeout its writes to the
// backend.

// upgradeStallTimeout is both send timeouts in these tests; upgradeWait
// bounds their waits (no assertion depends on it).
const (
	upgradeStallTimeout = 200 * time.Millisecond
	upgradeWait         = 15 * time.Second
)

// rawUpgradeBackend answers every request with a bare 101 on the hijacked
// connection and hands it to serve.
func rawUpgradeBackend(t *testing.T, serve func(net.Conn)) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: raw\r\nConnection: Upgrade\r\n\r\n")
		if brw.Flush() != nil {
			return
		}
		serve(c)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// upgradeStallRig publishes backend as wsHost over transport with both send
// timeouts at upgradeStallTimeout, and returns an upgraded raw connection
// to it whose socket buffers are 4 KiB, so that a side that stops reading
// stops the other soon.
func upgradeStallRig(t *testing.T, transport string, backend *httptest.Server) net.Conn {
	t.Helper()
	rig := testrig.New(t, testrig.Options{
		Transport: transport,
		Routes:    []gateway.Route{{App: "ws", Hosts: []string{wsHost}, Backend: testrig.MustURL(t, backend.URL)}},
		Gateway:   func(c *gateway.Config) { c.SendTimeout = upgradeStallTimeout },
	})
	rig.StartAgent(func(c *agent.Config) { c.BackendSendTimeout = upgradeStallTimeout })
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		c.Control(func(fd uintptr) {
			err = errors.Join(setSocketBuffer(fd, syscall.SO_RCVBUF, 4096), setSocketBuffer(fd, syscall.SO_SNDBUF, 4096))
		})
		return err
	}}
	c, err := d.Dial("tcp", rig.G.PublicAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(upgradeWait))
	if _, err := io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: "+wsHost+"\r\nConnection: Upgrade\r\nUpgrade: raw\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReaderSize(c, 128), nil)
	if err != nil {
		t.Fatalf("read the upgrade's answer: %v", err)
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade answered %s, want 101", res.Status)
	}
	return c
}

func upgradeWaitCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), upgradeWait)
	t.Cleanup(cancel)
	return ctx
}

// TestUpgradeClientStopsReading: a client that stops reading an upgraded
// connection while the backend keeps sending is cut after
// public.send_timeout, and the backend's connection with it.
func TestUpgradeClientStopsReading(t *testing.T) {
	for _, tr := range testrig.Transports {
		t.Run(tr, func(t *testing.T) {
			ctx := upgradeWaitCtx(t)
			ended := make(chan error, 1)
			backend := rawUpgradeBackend(t, func(c net.Conn) {
				c.SetWriteDeadline(time.Now().Add(upgradeWait))
				buf := make([]byte, 32<<10)
				for {
					if _, err := c.Write(buf); err != nil {
						ended <- err
						return
					}
				}
			})
			upgradeStallRig(t, tr, backend) // and never read
			err := waitRecv(ctx, t, ended, "the backend's write to fail: the gateway did not cut an upgraded connection "+
				"whose client stopped reading (public.send_timeout "+upgradeStallTimeout.String()+")")
			if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
				t.Fatalf("the backend's write timed out at the test's bound (%v): the gateway did not cut the "+
					"upgraded connection whose client stopped reading", err)
			}
		})
	}
}

// TestUpgradeBackendStopsReading: a backend that stops reading an upgraded
// connection while the client keeps sending is cut after the agent's send
// timeout, and the client's connection with it.
func TestUpgradeBackendStopsReading(t *testing.T) {
	for _, tr := range testrig.Transports {
		t.Run(tr, func(t *testing.T) {
			ctx := upgradeWaitCtx(t)
			release := make(chan struct{})
			backend := rawUpgradeBackend(t, func(net.Conn) { <-release }) // never reads
			t.Cleanup(func() { close(release) })
			c := upgradeStallRig(t, tr, backend)
			go func() {
				buf := make([]byte, 32<<10)
				for {
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
			closed := make(chan error, 1)
			go func() {
				_, err := c.Read(make([]byte, 1))
				closed <- err
			}()
			err := waitRecv(ctx, t, closed, "the client's connection to end: the agent did not cut an upgraded "+
				"connection whose backend stopped reading (its send timeout "+upgradeStallTimeout.String()+")")
			if isTimeout(err) {
				t.Fatalf("the client's read timed out at the test's bound (%v): the upgraded connection whose "+
					"backend stopped reading was not cut", err)
			}
		})
	}
}
