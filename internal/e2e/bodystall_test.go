package e2e

import (
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/testrig"
)

// zeros is an endless body of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestUploadBackendStopsReading: a backend that accepts an upload's
// connection and never reads held the agent's side of the exchange (the
// queued body, the backend connection, the stream's goroutines) for as long
// as it liked, after the gateway had given up too (1,000 such uploads: 868
// MiB on the agent). The agent now cuts the exchange after its backend send
// timeout without progress, and the gateway, still waiting (the app's
// timeout is far longer), answers 504 backend-timeout (the agent logs why).
func TestUploadBackendStopsReading(t *testing.T) {
	for _, tr := range testrig.Transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel() // each its own rig and backend; waits on the send timeout
			ctx := upgradeWaitCtx(t)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			conns := make(chan net.Conn, 4)
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					// A small receive buffer, never read: the agent's
					// writes block soon.
					if rc, err := c.(*net.TCPConn).SyscallConn(); err == nil {
						rc.Control(func(fd uintptr) { setSocketBuffer(fd, syscall.SO_RCVBUF, 4096) })
					}
					conns <- c
				}
			}()
			t.Cleanup(func() {
				ln.Close()
				for {
					select {
					case c := <-conns:
						c.Close()
					default:
						return
					}
				}
			})
			const host = "upload.example.test"
			rig := testrig.New(t, testrig.Options{
				Transport: tr,
				Routes: []gateway.Route{{App: "up", Hosts: []string{host}, Timeout: 2 * upgradeWait,
					Backend: testrig.MustURL(t, "http://"+ln.Addr().String())}},
			})
			rig.StartAgent(func(c *agent.Config) { c.BackendSendTimeout = upgradeStallTimeout })
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+rig.G.PublicAddr().String()+"/upload",
				io.LimitReader(zeros{}, 1<<30))
			if err != nil {
				t.Fatal(err)
			}
			req.Host = host
			res, err := rig.Client().Do(req)
			if err != nil {
				t.Fatalf("the upload to a backend that stopped reading got no answer: %v", err)
			}
			res.Body.Close()
			// The client's wait (upgradeWait) ends before the app's timeout
			// (twice that): only the agent's cut answers in time.
			if res.StatusCode != http.StatusGatewayTimeout || res.Header.Get(gateway.ErrorHeader) != "backend-timeout" {
				t.Fatalf("upload to a backend that stopped reading: %s, %s %q; want 504 backend-timeout "+
					"(the agent cuts it after %s)", res.Status, gateway.ErrorHeader, res.Header.Get(gateway.ErrorHeader),
					upgradeStallTimeout)
			}
		})
	}
}
