//go:build !unix

package main

// lockStoreDir does not lock store.dir where flock is missing: the store's
// own lock (Pebble's) still refuses a second instance, later.
func lockStoreDir(string) (func(), error) { return func() {}, nil }
