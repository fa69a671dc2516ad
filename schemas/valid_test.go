package schemas

import (
	"encoding/binary"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// validCases are inputs at the edges of JSON's grammar, each checked
// against json.Valid.
var validCases = []string{
	``, ` `, `{}`, `[]`, `""`, `0`, `-0`, `-`, `01`, `1.`, `1.5`, `.5`, `1e5`, `1E+5`, `1e-5`, `1e`, `1e+`, `-1.0e10`,
	`true`, `false`, `null`, `tru`, `nul`, `True`, `truex`, `{"a":1}`, `{"a":1,}`, `{"a" : [1, 2 ,3] }`, `{,}`, `[1,]`,
	`[,1]`, `{"a"}`, `{"a":}`, `{a:1}`, `{"a":1 "b":2}`, `"\u00e9"`, `"\u00g9"`, `"\u00e"`, `"\x"`, `"\/"`, `"a` + "\t" + `b"`,
	`"\u9faF"`, `"\uA9Af"`, `"\u0039"`, `"\u00`, `"\u0`, `"\u`, `tr`, `[nul`, `{"a":fals`, `{"\u0061":1}`,
	`"a` + "\x01" + `"`, `"a` + "\x7f" + `"`, `"é"`, " \t\r\n{}\n", "{}\v", `{} {}`, `[[[[]]]]`, `[[[]]`, `"\"`, `"\\"`,
	`{"a":{"b":{"c":[true,false,null,"x",-1.25e-3]}}}`, "\"\\ud800\"", `[1 2]`, `{"a":1}}`, `123abc`, `-a`,
	strings.Repeat("[", maxNestingDepth) + strings.Repeat("]", maxNestingDepth),
	strings.Repeat("[", maxNestingDepth+1) + strings.Repeat("]", maxNestingDepth+1),
	strings.Repeat(`{"a":`, maxNestingDepth) + "1" + strings.Repeat("}", maxNestingDepth),
	strings.Repeat(`{"a":`, maxNestingDepth+1) + "1" + strings.Repeat("}", maxNestingDepth+1),
}

func TestValidJSONAgreesWithEncodingJSON(t *testing.T) {
	check := func(t *testing.T, in []byte) {
		t.Helper()
		// No capacity past the input: reading beyond its end panics here,
		// as it would at the end of a record.
		in = in[:len(in):len(in)]
		if got, want := validJSON(in), json.Valid(in); got != want {
			t.Errorf("validJSON(%q) = %v, json.Valid says %v", truncate(string(in), 200), got, want)
		}
	}
	for _, c := range validCases {
		check(t, []byte(c))
	}
	files, err := filepath.Glob(filepath.Join("examples", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("examples: %v (%d files)", err, len(files))
	}
	corpus := [][]byte{benchEvent}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		corpus = append(corpus, b)
	}
	// Every prefix of every example, and random one-byte changes: a byte
	// replaced by one that matters to the grammar, deleted or inserted.
	interesting := []byte("{}[]:,\"\\/ \t\n0123456789-+.eEtfnulrsabu\x00\x01\x1f\x7f\xc3\xa9")
	rng := rand.New(rand.NewPCG(13, 13))
	mutants := 0
	for _, doc := range corpus {
		for n := range len(doc) + 1 {
			check(t, doc[:n])
		}
		for range 2000 {
			m := []byte(string(doc))
			pos := rng.IntN(len(m))
			c := interesting[rng.IntN(len(interesting))]
			switch rng.IntN(3) {
			case 0:
				m[pos] = c
			case 1:
				m = append(m[:pos], m[pos+1:]...)
			default:
				m = append(m[:pos], append([]byte{c}, m[pos:]...)...)
			}
			check(t, m)
			mutants++
		}
	}
	if mutants < 20000 {
		t.Fatalf("only %d mutants checked", mutants)
	}
}

// FuzzValidJSON compares validJSON with json.Valid on any input (go test
// -fuzz FuzzValidJSON ./schemas/); without -fuzz it runs the seeds.
func FuzzValidJSON(f *testing.F) {
	for _, c := range validCases {
		f.Add([]byte(c))
	}
	f.Add(benchEvent)
	f.Fuzz(func(t *testing.T, in []byte) {
		if got, want := validJSON(in), json.Valid(in); got != want {
			t.Errorf("validJSON(%q) = %v, json.Valid says %v", in, got, want)
		}
	})
}

// TestStopsString checks the eight-byte test against the byte-wise one on
// every byte value in every position, among plain bytes of all kinds.
func TestStopsString(t *testing.T) {
	stops := func(c byte) bool { return c < 0x20 || c == '"' || c == '\\' }
	for _, fill := range []byte{'a', ' ', '~', 0x7f, 0x80, 0xc3, 0xff, '!', '#', '[', ']'} {
		for pos := range 8 {
			for c := range 256 {
				b := [8]byte{fill, fill, fill, fill, fill, fill, fill, fill}
				b[pos] = byte(c)
				want := stops(byte(c)) || stops(fill)
				if got := stopsString(binary.LittleEndian.Uint64(b[:])); got != want {
					t.Fatalf("stopsString(%q) = %v, want %v", b, got, want)
				}
			}
		}
	}
}

// TestValidMerchantID: each end of each range of a merchant_id's
// characters, and the character just outside it.
func TestValidMerchantID(t *testing.T) {
	for _, c := range []struct {
		id   string
		want bool
	}{
		{"a", true}, {"z", true}, {"A", true}, {"Z", true}, {"0", true}, {"9", true}, {".", true}, {"_", true}, {"-", true},
		{"`", false}, {"{", false}, {"@", false}, {"[", false}, {"/", false}, {":", false}, {"", false}, {" ", false},
		{strings.Repeat("m", MaxMerchantIDLength), true}, {strings.Repeat("m", MaxMerchantIDLength+1), false},
	} {
		if got := ValidMerchantID(c.id); got != c.want {
			t.Errorf("ValidMerchantID(%q) = %v, want %v", c.id, got, c.want)
		}
	}
	if MerchantOf("") != MerchantDefault || MerchantOf("acme") != "acme" {
		t.Error("MerchantOf")
	}
}
