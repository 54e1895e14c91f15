package bench

import (
	"fmt"
	"time"
)

// progressEvery is how often the progress line is redrawn.
const progressEvery = 250 * time.Millisecond

// progress returns, when cfg.Progress is set, a function that starts
// redrawing a progress line for one load run and returns the function that
// stops it and clears the line. Nil when there is no progress writer.
func (c *Config) progress(label string) func(*recorder) func() {
	w := c.Progress
	if w == nil {
		return nil
	}
	return func(rec *recorder) func() {
		start := time.Now()
		draw := func() {
			held := ""
			if h := rec.held.Load(); h > 0 {
				held = fmt.Sprintf("  %d held", h)
			}
			fmt.Fprintf(w, "\r\x1b[Kbench: %s  %.1fs  %d exchanges  %d errors  %.1f MB%s",
				label, time.Since(start).Seconds(), rec.exchanges.Load(), rec.errors.Load(),
				float64(rec.bytes.Load())/1e6, held)
		}
		stop := make(chan struct{})
		stopped := make(chan struct{})
		go func() {
			defer close(stopped)
			draw() // at once, then every progressEvery
			t := time.NewTicker(progressEvery)
			defer t.Stop()
			for {
				select {
				case <-stop:
					fmt.Fprint(w, "\r\x1b[K")
					return
				case <-t.C:
					draw()
				}
			}
		}()
		return func() {
			close(stop)
			<-stopped
		}
	}
}
