//go:build unix

package main

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestStoreDataPrivate: started under the usual umask 022, notifyd keeps
// everything it writes in store.dir (the projection with the customers'
// contacts, the embedded broker's log, the API key) to its own user: files
// 0600, directories 0700. A store.dir every user can write stops start-up
// naming store.dir; one its group can write, and files an earlier start
// left readable, are tightened.
func TestStoreDataPrivate(t *testing.T) {
	old := syscall.Umask(0o022)
	t.Cleanup(func() { syscall.Umask(old) })
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	broker, httpAddr, apiAddr := freePort(t), freePort(t), freePort(t)
	cfgPath := filepath.Join(dir, "notifyd.yaml")
	cfg := fmt.Sprintf("embedded_broker: {listen: %q}\nstore: {dir: %q}\nhttp: {listen: %q}\napi: {listen: %q}\nlog: {level: warn}\nproviders:\n  email: {kind: console}\n",
		broker, data, httpAddr, apiAddr)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("a store others can write is refused", func(t *testing.T) {
		if err := os.Mkdir(data, 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(data, 0o777); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(data)
		var out, errOut bytes.Buffer
		code := run(context.Background(), []string{"serve", "-config", cfgPath}, nil, &out, &errOut)
		if code != 1 || !strings.Contains(errOut.String(), "store.dir: "+data+" can be written by every user (mode 0777)") {
			t.Errorf("exit %d, stderr %q", code, errOut.String())
		}
	})

	// An earlier version left a readable directory and file, in a store
	// directory its group can write: notifyd owns them, so it tightens
	// them all.
	if err := os.MkdirAll(filepath.Join(data, "old"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(data, 0o775); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "old", "leftover"), []byte("layla@example.com"), 0o644); err != nil {
		t.Fatal(err)
	}
	func() {
		_, _ = serveForTest(t, httpAddr, "-config", cfgPath)
		event := `{"event_id":"e-1","session_id":"sess-1","order_no":"order-1","state":"paid","timestamp_utc":"2026-11-02 09:00:07","customer_email":"layla@example.com","customer_phone":"+96550001234","notifications":{"email":["paid"]}}`
		var out, errOut bytes.Buffer
		if code := run(t.Context(), []string{"publish", "-config", cfgPath, "-topic", "payment-events"}, strings.NewReader(event+"\n"), &out, &errOut); code != 0 {
			t.Fatalf("publish exited %d: %s", code, errOut.String())
		}
		// No templates configured: the answer is a rejection, decided
		// from the stored transaction (and recorded in the store).
		out.Reset()
		run(t.Context(), []string{"resend", "-config", cfgPath, "-session-id", "sess-1", "-channels", "email"}, nil, &out, &errOut)
		if !strings.Contains(out.String(), `"recipient":"l***@example.com"`) {
			t.Fatalf("resend: %s %s", out.String(), errOut.String())
		}
	}()
	// serveForTest stops it when the test ends; the files exist already.
	var files, dirs int
	err := filepath.WalkDir(data, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want, dirs = 0o700, dirs+1
		} else {
			files++
		}
		if perm := info.Mode().Perm(); perm&0o077 != 0 || perm&^want != 0 {
			t.Errorf("%s: mode %04o, want at most %04o", path, perm, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"projection", "embedded-broker", "api-key"} {
		if _, err := os.Stat(filepath.Join(data, sub)); err != nil {
			t.Errorf("store.dir lacks %s: %v", sub, err)
		}
	}
	if files < 5 {
		t.Errorf("only %d files in %d directories under store.dir: did the store write anything?", files, dirs)
	}
}
