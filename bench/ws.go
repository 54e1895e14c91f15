package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// wsMessage is what every ws exchange sends; it is never written after
// init, so every worker shares it.
var wsMessage = bytes.Repeat([]byte("w"), wsMessageBytes)

// wsCloseTimeout bounds the closing handshakes at the end of a scenario.
const wsCloseTimeout = 2 * time.Second

// wsDialTimeout bounds the opening handshakes made before a round's clock
// starts: a path that never answers one must not hold the run.
const wsDialTimeout = 2 * time.Second

// wsDriver drives the ws scenario: one WebSocket per worker, kept from
// round to round, and one exchange is a 64 B binary message echoed back.
// Connections are made before each round's clock starts; one that fails
// is made again by its worker, inside the measured time.
type wsDriver struct {
	lg    *loader
	load  *load
	conns []*websocket.Conn // by worker; nil → not connected. Owned by the round: worker i uses conns[i] only
}

func (d *wsDriver) round(ctx context.Context, dur time.Duration, run *pathRun, progress func(*recorder) func()) time.Duration {
	if d.conns == nil {
		d.conns = make([]*websocket.Conn, d.load.workers)
	}
	dctx, cancel := context.WithTimeout(ctx, wsDialTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for i := range d.conns {
		if d.conns[i] != nil {
			continue
		}
		wg.Go(func() {
			c, err := d.dial(dctx)
			if err != nil {
				if ctx.Err() == nil {
					run.rec.errors.Add(1)
					run.rec.sample(err.Error())
				}
				return
			}
			d.conns[i] = c
		})
	}
	wg.Wait()
	l := *d.load
	l.exchange = func(i int) func(context.Context, *recorder) error {
		return func(ctx context.Context, rec *recorder) error { return d.echo(ctx, i, rec) }
	}
	return d.lg.run(ctx, &l, dur, run.rec, progress)
}

func (d *wsDriver) dial(ctx context.Context) (*websocket.Conn, error) {
	u := "ws" + strings.TrimPrefix(d.load.url, "http")
	c, res, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: d.lg.tr},
		Host:       d.load.host,
	})
	if err != nil {
		if res != nil && res.StatusCode != http.StatusSwitchingProtocols {
			return nil, fmt.Errorf("websocket handshake: %w", statusError(res))
		}
		return nil, fmt.Errorf("websocket handshake: %w", err)
	}
	return c, nil
}

// echo sends one message on worker i's connection and reads the echo.
func (d *wsDriver) echo(ctx context.Context, i int, rec *recorder) error {
	c := d.conns[i]
	if c == nil {
		var err error
		if c, err = d.dial(ctx); err != nil {
			return err
		}
		d.conns[i] = c
	}
	err := c.Write(ctx, websocket.MessageBinary, wsMessage)
	if err == nil {
		rec.bytes.Add(wsMessageBytes)
		var msg []byte
		_, msg, err = c.Read(ctx)
		rec.bytes.Add(int64(len(msg)))
		if err == nil && !bytes.Equal(msg, wsMessage) {
			err = errors.New("websocket echo differs from the message sent")
		}
	}
	if err != nil {
		// A cancelled read closes the connection; make it again.
		c.CloseNow()
		d.conns[i] = nil
	}
	return err
}

// close ends every connection with a closing handshake, all at once.
func (d *wsDriver) close() {
	var wg sync.WaitGroup
	for _, c := range d.conns {
		if c == nil {
			continue
		}
		wg.Go(func() {
			t := time.AfterFunc(wsCloseTimeout, func() { c.CloseNow() })
			defer t.Stop()
			_ = c.Close(websocket.StatusNormalClosure, "")
		})
	}
	wg.Wait()
	d.conns = nil
}
