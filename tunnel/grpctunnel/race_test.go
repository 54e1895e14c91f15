//go:build race

package grpctunnel

const raceEnabled = true
