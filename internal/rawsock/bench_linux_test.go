package rawsock

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// echoEnv, when set in the environment (to "net" or "rawsock"), makes the
// test binary an echo server for BenchmarkPingPong instead (see TestMain).
const echoEnv = "RAWSOCK_BENCH_ECHO"

// BenchmarkPingPong: one 64-byte message echoed at a time over loopback by
// another process, both ends on package net's connections or both on
// rawsock's. Two processes, as gateway, agent and backend are: each is idle
// while the other works, so its monitor thread goes to sleep, and with
// package net the next system call wakes it. cpu-ns/op is the CPU of both
// processes per round trip, ns/op the round trip.
//
//	go test ./internal/rawsock -run '^$' -bench PingPong -count 6
func BenchmarkPingPong(b *testing.B) {
	for _, mode := range []string{"net", "rawsock"} {
		b.Run(mode, func(b *testing.B) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), echoEnv+"="+mode, fmt.Sprintf("GOMAXPROCS=%d", runtime.GOMAXPROCS(0)))
			cmd.Stderr = os.Stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				b.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			addr, err := bufio.NewReader(out).ReadString('\n')
			if err != nil {
				cmd.Process.Kill()
				cmd.Wait()
				b.Fatalf("the echo process gave no address: %v", err)
			}
			c, err := net.Dial("tcp", strings.TrimSpace(addr))
			if err != nil {
				cmd.Process.Kill()
				cmd.Wait()
				b.Fatal(err)
			}
			if mode == "rawsock" {
				c = Wrap(c)
			}
			msg := make([]byte, 64)
			start := cpuTime()
			for b.Loop() {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, msg); err != nil {
					b.Fatal(err)
				}
			}
			own := cpuTime() - start
			c.Close() // the echo process exits at the end of the stream
			if err := cmd.Wait(); err != nil {
				b.Fatalf("echo process: %v", err)
			}
			ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
			child := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
			b.ReportMetric(float64(own+child)/float64(b.N), "cpu-ns/op")
		})
	}
}

// serveEcho is the echo process: it prints its address, echoes one
// connection's 64-byte messages and returns at its end.
func serveEcho(mode string) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	fmt.Println(ln.Addr())
	c, err := ln.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	if mode == "rawsock" {
		c = Wrap(c)
	}
	buf := make([]byte, 64)
	for {
		if _, err := io.ReadFull(c, buf); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		if _, err := c.Write(buf); err != nil {
			return err
		}
	}
}

// cpuTime is the process's user and system CPU so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
