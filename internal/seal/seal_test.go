package seal

import (
	"errors"
	"strings"
	"testing"
)

func TestSealOpenRotate(t *testing.T) {
	old, _ := NewKey()
	cur, _ := NewKey()
	before, err := New(old)
	if err != nil {
		t.Fatal(err)
	}
	s, err := before.Seal("acme", "auth-token-1")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(s, "auth-token-1") || !strings.HasPrefix(s, "v1:"+before.CurrentID()+":") || KeyID(s) != before.CurrentID() {
		t.Fatalf("sealed %q", s)
	}
	if again, _ := before.Seal("acme", "auth-token-1"); again == s {
		t.Error("two seals of the same secret are equal (no nonce)")
	}
	after, err := New(cur, old)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := after.Open("acme", s); err != nil || p != "auth-token-1" {
		t.Errorf("open with the previous key: %q %v", p, err)
	}
	if _, err := after.Open("globex", s); err == nil {
		t.Error("opened for another merchant")
	}
	only, _ := New(cur)
	if _, err := only.Open("acme", s); !errors.Is(err, ErrNoKey) {
		t.Errorf("open without the key: %v, want ErrNoKey", err)
	}
	tampered := s[:len(s)-4] + "AAA="
	if _, err := after.Open("acme", tampered); err == nil {
		t.Error("opened an altered value")
	}
	for _, bad := range []string{"", "auth-token-1", "v2:" + before.CurrentID() + ":AAAA", "v1:" + before.CurrentID() + ":!!", "v1:" + before.CurrentID() + ":AA=="} {
		if _, err := after.Open("acme", bad); err == nil {
			t.Errorf("opened %q", bad)
		}
	}
	resealed, _ := after.Seal("acme", "auth-token-1")
	if KeyID(resealed) != after.CurrentID() || after.CurrentID() == before.CurrentID() {
		t.Errorf("resealed with %s, want %s", KeyID(resealed), after.CurrentID())
	}
}

func TestParseKey(t *testing.T) {
	k, _ := NewKey()
	if b, err := ParseKey(" " + k + "\n"); err != nil || len(b) != KeySize {
		t.Errorf("ParseKey(%q) = %d bytes, %v", k, len(b), err)
	}
	for _, bad := range []string{"", "not base64!", "c2hvcnQ="} {
		_, err := ParseKey(bad)
		if err == nil {
			t.Errorf("ParseKey(%q) accepted", bad)
		} else if bad != "" && strings.Contains(err.Error(), bad) {
			t.Errorf("error %q repeats the key", err)
		}
	}
	if _, err := New("c2hvcnQ="); err == nil || !strings.Contains(err.Error(), "sealing key") {
		t.Errorf("New with a short key: %v", err)
	}
	if _, err := New(k, "c2hvcnQ="); err == nil || !strings.Contains(err.Error(), "previous sealing key 0") {
		t.Errorf("New with a short previous key: %v", err)
	}
}
