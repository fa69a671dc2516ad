package secretfile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestReadOrMake(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key")
	made := 0
	newSecret := func() (string, error) { made++; return "s3cret", nil }
	for range 2 {
		s, err := ReadOrMake(path, newSecret)
		if err != nil || s != "s3cret" {
			t.Fatalf("ReadOrMake = %q %v", s, err)
		}
	}
	if made != 1 {
		t.Errorf("made %d times, want once", made)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v %v, want 0600", st.Mode().Perm(), err)
	}
	if err := WriteNew(path, "other"); err == nil {
		t.Error("WriteNew wrote over an existing file")
	}
	fail := errors.New("no entropy")
	if _, err := ReadOrMake(filepath.Join(t.TempDir(), "k"), func() (string, error) { return "", fail }); !errors.Is(err, fail) {
		t.Errorf("ReadOrMake = %v, want the maker's error", err)
	}
	if _, err := ReadOrMake(filepath.Join(t.TempDir(), "missing-dir", "k"), newSecret); err == nil {
		t.Error("made a file in a missing directory")
	}
}
