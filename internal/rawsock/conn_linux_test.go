package rawsock

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(echoEnv); mode != "" {
		if err := serveEcho(mode); err != nil {
			fmt.Fprintln(os.Stderr, "echo:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// pair is a connected loopback pair: a as Wrap makes it when raw, else the
// plain *net.TCPConn; b is always plain.
func pair(t testing.TB, raw bool) (a net.Conn, b *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	a = c
	if raw {
		a = Wrap(c)
		if _, ok := a.(*Conn); !ok {
			t.Fatalf("Wrap(%T) = %T, want *rawsock.Conn", c, a)
		}
	}
	t.Cleanup(func() { a.Close(); s.Close() })
	return a, s.(*net.TCPConn)
}

// TestConnMovesBytes: small and large writes both ways arrive whole and in
// order; an 8 MiB write to a peer that reads slowly waits for room in the
// socket's buffer (the EAGAIN path) and still writes everything.
func TestConnMovesBytes(t *testing.T) {
	a, b := pair(t, true)
	if _, err := a.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(b, got); err != nil || string(got) != "ping" {
		t.Fatalf("peer read %q, %v; want ping", got, err)
	}
	if _, err := b.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(a, got); err != nil || string(got) != "pong" {
		t.Fatalf("read %q, %v; want pong", got, err)
	}

	big := make([]byte, 8<<20)
	rand.Read(big)
	received := make(chan []byte, 1)
	go func() {
		var buf bytes.Buffer
		chunk := make([]byte, 1500) // small reads: the writer fills the socket buffer and waits
		for buf.Len() < len(big) {
			n, err := b.Read(chunk)
			buf.Write(chunk[:n])
			if err != nil {
				break
			}
		}
		received <- buf.Bytes()
	}()
	n, err := a.Write(big)
	if err != nil || n != len(big) {
		t.Fatalf("Write of 8 MiB = %d, %v; want all of it", n, err)
	}
	if r := <-received; !bytes.Equal(r, big) {
		t.Fatalf("the peer received %d bytes, not the %d written (or not the same)", len(r), len(big))
	}

	// And the other way, read into a large buffer in pieces.
	go func() { b.Write(big); b.CloseWrite() }()
	all, err := io.ReadAll(a)
	if err != nil || !bytes.Equal(all, big) {
		t.Fatalf("read %d bytes (%v), want the peer's %d", len(all), err, len(big))
	}
	// At the end of the stream: io.EOF, again and again.
	if n, err := a.Read(got); n != 0 || err != io.EOF {
		t.Fatalf("Read after the peer's FIN = %d, %v; want 0, io.EOF", n, err)
	}
	if n, err := a.Read(nil); n != 0 || err != nil {
		t.Fatalf("Read of nothing = %d, %v; want 0, nil (as net.TCPConn)", n, err)
	}
	if n, err := a.Write(nil); n != 0 || err != nil {
		t.Fatalf("Write of nothing = %d, %v; want 0, nil (as net.TCPConn)", n, err)
	}
}

// TestConnErrorsAsNet: each failure comes back as package net reports it
// for a plain TCP connection: the same text but for the ports, and the same
// answers to errors.Is and net.Error.
func TestConnErrorsAsNet(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, a net.Conn, b *net.TCPConn) error
		is   error
	}{
		{"read deadline", func(t *testing.T, a net.Conn, b *net.TCPConn) error {
			a.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			_, err := a.Read(make([]byte, 10))
			return err
		}, os.ErrDeadlineExceeded},
		{"read after close", func(t *testing.T, a net.Conn, b *net.TCPConn) error {
			a.Close()
			_, err := a.Read(make([]byte, 10))
			return err
		}, net.ErrClosed},
		{"empty read after close", func(t *testing.T, a net.Conn, b *net.TCPConn) error {
			a.Close()
			_, err := a.Read(nil)
			return err
		}, net.ErrClosed},
		{"empty write after close", func(t *testing.T, a net.Conn, b *net.TCPConn) error {
			a.Close()
			_, err := a.Write(nil)
			return err
		}, net.ErrClosed},
		{"write after close", func(t *testing.T, a net.Conn, b *net.TCPConn) error {
			a.Close()
			_, err := a.Write([]byte("x"))
			return err
		}, net.ErrClosed},
		{"write deadline, peer not reading", func(t *testing.T, a net.Conn, b *net.TCPConn) error {
			// The deadline is set once the write has begun (its first
			// byte reached the peer), not before it: on a loaded machine
			// a deadline 50 ms ahead could pass before the first write(2).
			type result struct {
				n   int
				err error
			}
			done := make(chan result, 1)
			go func() {
				n, err := a.Write(make([]byte, 64<<20))
				done <- result{n, err}
			}()
			if _, err := io.ReadFull(b, make([]byte, 1)); err != nil {
				t.Fatalf("the peer's read of the first byte: %v", err)
			}
			a.SetWriteDeadline(time.Now())
			r := <-done
			if r.n == 0 || r.n >= 64<<20 {
				t.Errorf("wrote %d bytes before the deadline, want some but not all", r.n)
			}
			return r.err
		}, os.ErrDeadlineExceeded},
		{"read, peer reset", func(t *testing.T, a net.Conn, b *net.TCPConn) error {
			b.SetLinger(0)
			b.Write([]byte("data"))
			b.Close()
			buf := make([]byte, 10)
			for {
				if _, err := a.Read(buf); err != nil {
					return err
				}
			}
		}, syscall.ECONNRESET},
		{"write, peer reset", func(t *testing.T, a net.Conn, b *net.TCPConn) error {
			b.SetLinger(0)
			b.Close()
			for {
				if _, err := a.Write([]byte("data")); err != nil {
					return err
				}
			}
		}, nil}, // EPIPE or ECONNRESET, by timing
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var texts [2]string
			var errs [2]error
			for i, raw := range []bool{false, true} {
				a, b := pair(t, raw)
				err := tc.run(t, a, b)
				if err == nil {
					t.Fatalf("raw %v: no error", raw)
				}
				errs[i] = err
				texts[i] = strings.NewReplacer(a.LocalAddr().String(), "LOCAL", a.RemoteAddr().String(), "REMOTE").Replace(err.Error())
				var oe *net.OpError
				if !errors.As(err, &oe) {
					t.Errorf("raw %v: %T %v is no *net.OpError", raw, err, err)
				}
				if tc.is != nil && !errors.Is(err, tc.is) {
					t.Errorf("raw %v: %v is not %v", raw, err, tc.is)
				}
			}
			if tc.is == nil {
				// The kernel picks EPIPE or ECONNRESET; the shape must match.
				for i := range texts {
					texts[i] = strings.NewReplacer("broken pipe", "RESET", "connection reset by peer", "RESET").Replace(texts[i])
				}
			}
			if texts[0] != texts[1] {
				t.Errorf("the error says %q, package net's %q", texts[1], texts[0])
			}
			var ne0, ne1 net.Error
			if errors.As(errs[0], &ne0) != errors.As(errs[1], &ne1) || (ne0 != nil && ne0.Timeout() != ne1.Timeout()) {
				t.Errorf("net.Error differs: %#v against package net's %#v", errs[1], errs[0])
			}
		})
	}
}

// TestConnCloseWakesRead: a Read waiting for data returns once another
// goroutine closes the connection, with net.ErrClosed.
func TestConnCloseWakesRead(t *testing.T) {
	a, _ := pair(t, true)
	done := make(chan error, 1)
	go func() {
		_, err := a.Read(make([]byte, 10))
		done <- err
	}()
	// The reader may not be waiting yet; Close works either way.
	a.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read = %v, want net.ErrClosed", err)
	}
}

// TestConnConcurrentCalls: Reads and Writes from several goroutines at once
// take turns (each call's buffer is the connection's while it runs): every
// byte written arrives once.
func TestConnConcurrentCalls(t *testing.T) {
	a, b := pair(t, true)
	const writers, each = 4, 2000
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := bytes.Repeat([]byte{byte('a' + w)}, 100)
			for range each {
				if _, err := a.Write(msg); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	go func() { wg.Wait(); a.(*Conn).CloseWrite() }()
	var mu sync.Mutex
	counts := map[byte]int{}
	var rg sync.WaitGroup
	for range 3 {
		rg.Add(1)
		go func() {
			defer rg.Done()
			buf := make([]byte, 333)
			for {
				n, err := b.Read(buf)
				mu.Lock()
				for _, c := range buf[:n] {
					counts[c]++
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	rg.Wait()
	for w := range writers {
		if got := counts[byte('a'+w)]; got != each*100 {
			t.Errorf("writer %d: %d bytes arrived, want %d", w, got, each*100)
		}
	}

	// Reads at once on the wrapped side.
	go func() {
		for range 1000 {
			b.Write([]byte("0123456789"))
		}
		b.CloseWrite()
	}()
	var total int
	var rg2 sync.WaitGroup
	for range 3 {
		rg2.Add(1)
		go func() {
			defer rg2.Done()
			buf := make([]byte, 7)
			for {
				n, err := a.Read(buf)
				mu.Lock()
				total += n
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	rg2.Wait()
	if total != 10000 {
		t.Errorf("concurrent Reads got %d bytes, want 10000", total)
	}
}

// TestWrapAndListener: only a *net.TCPConn is wrapped; Listener wraps what
// it accepts and passes its errors on.
func TestWrapAndListener(t *testing.T) {
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	if got := Wrap(p1); got != p1 {
		t.Errorf("Wrap(pipe) = %T, want the pipe itself", got)
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := Listener{inner}
	go func() {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err == nil {
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.(*Conn); !ok {
		t.Errorf("Listener.Accept gave %T, want *rawsock.Conn", c)
	}
	if b, err := io.ReadAll(c); err != nil || string(b) != "hi" {
		t.Errorf("read %q, %v; want hi", b, err)
	}
	c.Close()
	ln.Close()
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept on a closed listener = %v, want net.ErrClosed", err)
	}
}

// TestFDCalls: ReadFD and WriteFD on a non-blocking socket pair: EAGAIN
// when there is nothing, the bytes when there are, 0 at the end.
func TestFDCalls(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fds[0])
	buf := make([]byte, 8)
	if n, err := ReadFD(uintptr(fds[0]), buf); err != syscall.EAGAIN || n != 0 {
		t.Fatalf("ReadFD of an empty socket = %d, %v; want 0, EAGAIN", n, err)
	}
	if n, err := ReadFD(uintptr(fds[0]), nil); err != nil || n != 0 {
		t.Fatalf("ReadFD of nothing = %d, %v; want 0, nil (no panic)", n, err)
	}
	if n, err := WriteFD(uintptr(fds[1]), nil); err != nil || n != 0 {
		t.Fatalf("WriteFD of nothing = %d, %v; want 0, nil", n, err)
	}
	if n, err := WriteFD(uintptr(fds[1]), []byte("abc")); err != nil || n != 3 {
		t.Fatalf("WriteFD = %d, %v; want 3, nil", n, err)
	}
	if n, err := ReadFD(uintptr(fds[0]), buf); err != nil || string(buf[:n]) != "abc" {
		t.Fatalf("ReadFD = %q, %v; want abc", buf[:n], err)
	}
	syscall.Close(fds[1])
	if n, err := ReadFD(uintptr(fds[0]), buf); err != nil || n != 0 {
		t.Fatalf("ReadFD after the peer closed = %d, %v; want 0, nil", n, err)
	}
	if _, err := WriteFD(^uintptr(0)>>1, []byte("x")); err != syscall.EBADF {
		t.Fatalf("WriteFD on no descriptor = %v, want EBADF", err)
	}
}

// TestSwitch: SALLYPORT_RAW_SOCKETS=off (FromEnv, Set) leaves connections
// as they are from then on; on wraps them again; any other value is refused
// with the variable and its values named, and changes nothing.
func TestSwitch(t *testing.T) {
	t.Cleanup(func() { Set("") })
	for _, tc := range []struct {
		env     string
		wrapped bool
		err     string
	}{
		{"off", false, ""},
		{"on", true, ""},
		{"off", false, ""},
		{"", true, ""},
		{"off", false, ""},
		{"yes", false, `SALLYPORT_RAW_SOCKETS="yes": want on or off`}, // still off
		{"OFF", false, `SALLYPORT_RAW_SOCKETS="OFF": want on or off`},
	} {
		t.Setenv(Env, tc.env)
		err := FromEnv()
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s=%q: FromEnv() = %v, want %q", Env, tc.env, err, tc.err)
		}
		a, _ := pair(t, false)
		_, isRaw := Wrap(a).(*Conn)
		if isRaw != tc.wrapped || On() != tc.wrapped {
			t.Errorf("%s=%q: Wrap wraps %v (On %v), want %v", Env, tc.env, isRaw, On(), tc.wrapped)
		}
	}
	// Off, ReadFD and WriteFD still read and write (through package syscall).
	Set("off")
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fds[0])
	defer syscall.Close(fds[1])
	buf := make([]byte, 4)
	if n, err := ReadFD(uintptr(fds[0]), buf); err != syscall.EAGAIN || n != 0 {
		t.Errorf("off: ReadFD of an empty socket = %d, %v; want 0, EAGAIN", n, err)
	}
	if n, err := WriteFD(uintptr(fds[1]), []byte("off")); n != 3 || err != nil {
		t.Errorf("off: WriteFD = %d, %v", n, err)
	}
	if n, err := ReadFD(uintptr(fds[0]), buf); err != nil || string(buf[:n]) != "off" {
		t.Errorf("off: ReadFD = %q, %v; want off", buf[:n], err)
	}
}
