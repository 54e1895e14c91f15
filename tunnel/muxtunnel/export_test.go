package muxtunnel

// SetOnIdle sets the hook called when a stream goroutine is about to wait
// for another stream; call it before Serve.
func SetOnIdle(c *ClientSession, f func()) { c.onIdle = f }

// StreamGoroutinesStarted counts the stream goroutines c started.
func StreamGoroutinesStarted(c *ClientSession) int32 { return c.started.Load() }
