package gateway

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"go.uber.org/zap"
)

// quicBufferBytes is the UDP socket buffer size quic-go asks for (7 MiB).
// Linux caps what a program may ask for at net.core.rmem_max and
// net.core.wmem_max (often 208 KiB); quic-go then prints a one-line warning
// through the standard logger, which the binary routes into its own log.
const quicBufferBytes = 7 << 20

// udpBufferAdvice returns what to do about the kernel's UDP buffer caps, or
// "" when they are large enough or unknown (not Linux).
func udpBufferAdvice(readFile func(string) ([]byte, error)) string {
	var low []string
	for _, name := range []string{"rmem_max", "wmem_max"} {
		b, err := readFile("/proc/sys/net/core/" + name)
		if err != nil {
			return ""
		}
		v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return ""
		}
		if v < quicBufferBytes {
			low = append(low, fmt.Sprintf("net.core.%s=%d", name, v))
		}
	}
	if len(low) == 0 {
		return ""
	}
	return fmt.Sprintf("UDP socket buffers are capped below the %d bytes QUIC asks for (%s): "+
		"QUIC still works, but bursts may drop packets and throughput on fast links is lower. "+
		"Raise the caps with: sysctl -w net.core.rmem_max=%d net.core.wmem_max=%d "+
		"(and persist them in /etc/sysctl.d/)", quicBufferBytes, strings.Join(low, ", "), quicBufferBytes, quicBufferBytes)
}

// warnUDPBuffers logs udpBufferAdvice once per start, if there is any.
func warnUDPBuffers(log *zap.Logger) {
	if advice := udpBufferAdvice(os.ReadFile); advice != "" {
		log.Warn(advice)
	}
}
