package main

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		// Remove the binary the binary tests built, if they did.
		if builtDir != "" {
			os.RemoveAll(builtDir)
		}
		os.Exit(code)
	}))
}
