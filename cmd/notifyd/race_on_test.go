//go:build race

package main

// raceEnabled builds the notifyd binaries the integration tests run with
// the race detector too, when the tests themselves run with it.
const raceEnabled = true
