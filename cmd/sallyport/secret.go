//go:build !agentonly

package main

import (
	"fmt"
	"os"
	"strings"
)

// readSecret reads a secret that the config keeps out of itself: from
// file, or else from the environment variable env. "" when both are
// empty; an error when the one named is missing or empty.
func readSecret(file, env string) (string, error) {
	switch {
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", err
		}
		s := strings.TrimSpace(string(b))
		if s == "" {
			return "", fmt.Errorf("%s is empty", file)
		}
		return s, nil
	case env != "":
		s := strings.TrimSpace(os.Getenv(env))
		if s == "" {
			return "", fmt.Errorf("the environment variable %s is not set", env)
		}
		return s, nil
	}
	return "", nil
}
