package preauth

import (
	"crypto/tls"
	"testing"

	"go.uber.org/goleak"
)

type tlsState = tls.ConnectionState

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
