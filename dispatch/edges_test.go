package dispatch

import (
	"bytes"
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/sony/gobreaker"
	gomail "github.com/wneessen/go-mail"

	"github.com/notifyd/notifyd/schemas"
)

// The tests in this file hold the edges of dispatch's rules: each value at
// a limit and the one beyond it. They were written for the mutants that
// survived the other tests (scripts/mutation): a `<` that could be `<=`
// with every test still passing.

// TestMaskPhoneEdges: a number keeps its last four digits only when its
// national number has more than four (else nothing would be hidden).
func TestMaskPhoneEdges(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"+9651234", "***"},              // national number 1234: four digits
		{"+96512345", "+965****2345"},    // five
		{"+96550001234", "+965****1234"}, // eight
	} {
		if got := MaskPhone(tt.in); got != tt.want {
			t.Errorf("MaskPhone(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestValidateEmailLength: RFC 5321's 254 bytes are accepted, 255 are not.
func TestValidateEmailLength(t *testing.T) {
	for _, tt := range []struct {
		n    int
		want bool
	}{{254, true}, {255, false}} {
		// 64 bytes of local part, then labels of up to 50 bytes and ".com".
		domain := ""
		for rest := tt.n - 65 - len(".com"); rest > 0; {
			l := min(rest, 50)
			if rest-l == 1 { // no empty label
				l--
			}
			domain += strings.Repeat("b", l)
			rest -= l
			if rest > 0 {
				domain += "."
				rest--
			}
		}
		addr := strings.Repeat("a", 64) + "@" + domain + ".com"
		if len(addr) != tt.n {
			t.Fatalf("built %d bytes, want %d", len(addr), tt.n)
		}
		if err := ValidateEmail(addr); (err == nil) != tt.want {
			t.Errorf("%d-byte address: %v, want valid=%v", tt.n, err, tt.want)
		}
	}
}

// TestBreakerTrips: the circuit opens at min_calls calls in the window of
// which at least failure_ratio failed, not before.
func TestBreakerTrips(t *testing.T) {
	for _, tt := range []struct {
		name     string
		policy   BreakerPolicy
		outcomes []bool // true: failed
		open     bool
	}{
		{"4 of 4 failed at min_calls 4", BreakerPolicy{FailureRatio: 0.5, MinCalls: 4}, []bool{true, true, true, true}, true},
		{"3 failed calls, min_calls 4", BreakerPolicy{FailureRatio: 0.5, MinCalls: 4}, []bool{true, true, true}, false},
		{"2 of 4 failed: exactly the ratio", BreakerPolicy{FailureRatio: 0.5, MinCalls: 4}, []bool{false, true, false, true}, true},
		{"1 of 4 failed: under the ratio", BreakerPolicy{FailureRatio: 0.5, MinCalls: 4}, []bool{false, false, false, true}, false},
		{"1 of 2 at ratio 1: under", BreakerPolicy{FailureRatio: 1, MinCalls: 2}, []bool{false, true}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.policy
			p.SetDefaults()
			b := newBreaker("p", p, func(gobreaker.State) {})
			for i, failed := range tt.outcomes {
				done, err := b.allow()
				if err != nil {
					t.Fatalf("call %d refused: %v", i+1, err)
				}
				done(failed)
			}
			if open := b.state() == gobreaker.StateOpen; open != tt.open {
				t.Errorf("open = %v, want %v", open, tt.open)
			}
		})
	}
}

// TestHTTPAnswerClasses: 2xx is success, 300 is not; 429 and 5xx call for
// a retry.
func TestHTTPAnswerClasses(t *testing.T) {
	for _, tt := range []struct {
		status             int
		success, retryable bool
	}{
		{199, false, false}, {200, true, false}, {299, true, false}, {300, false, false},
		{428, false, false}, {429, false, true}, {499, false, false}, {500, false, true}, {503, false, true},
	} {
		a := httpAnswer{status: tt.status}
		if a.success() != tt.success || a.retryable() != tt.retryable {
			t.Errorf("HTTP %d: success %v retryable %v, want %v %v", tt.status, a.success(), a.retryable(), tt.success, tt.retryable)
		}
	}
}

// TestFoldableSubjectEdges: a word of 60 characters stays as written, one
// of 61 makes the subject RFC 2047 encoded-words.
func TestFoldableSubjectEdges(t *testing.T) {
	at := "Receipt " + strings.Repeat("x", foldableWord)
	if got := foldableSubject(at); got != at {
		t.Errorf("a %d-character word: %q, want it unchanged", foldableWord, got)
	}
	over := "Receipt " + strings.Repeat("x", foldableWord+1)
	if got := foldableSubject(over); !strings.HasPrefix(got, "=?UTF-8?B?") {
		t.Errorf("a %d-character word: %q, want encoded-words", foldableWord+1, got)
	}
}

// TestTransferEncodingThreshold: base64 when more than one byte in six is
// not ASCII (0x80, a continuation byte, counts), quoted-printable at one in
// six or fewer.
func TestTransferEncodingThreshold(t *testing.T) {
	for _, tt := range []struct {
		text string
		want gomail.Encoding
	}{
		{"Àabcde", gomail.EncodingB64},     // 2 of 7 bytes (C3 80)
		{"Àabcdefghij", gomail.EncodingQP}, // 2 of 12: exactly one in six
		{"Àabcdefghi", gomail.EncodingB64}, // 2 of 11
		{"Payment received", gomail.EncodingQP},
		{"تم استلام دفعتك", gomail.EncodingB64},
	} {
		if got := transferEncoding(tt.text); got != tt.want {
			t.Errorf("transferEncoding(%q) = %s, want %s", tt.text, got, tt.want)
		}
	}
}

// TestMessageIDDomain: letters, digits, '.' and '-' make a Message-ID
// domain (lower-cased); any other byte, the first outside each range
// included, makes it notifyd.invalid.
func TestMessageIDDomain(t *testing.T) {
	for _, tt := range []struct{ addr, want string }{
		{"r@az.AZ-09.example", "az.az-09.example"},
		{"r@", "notifyd.invalid"},
	} {
		if got := messageIDDomain(tt.addr); got != tt.want {
			t.Errorf("messageIDDomain(%q) = %q, want %q", tt.addr, got, tt.want)
		}
	}
	for _, c := range "`{[/:_+ " {
		addr := "r@shop" + string(c) + "example"
		if got := messageIDDomain(addr); got != "notifyd.invalid" {
			t.Errorf("messageIDDomain(%q) = %q, want notifyd.invalid", addr, got)
		}
	}
}

// TestASCIIAlnum: the Account SID check takes ASCII letters and digits,
// the first and last of each range included, and nothing next to them.
func TestASCIIAlnum(t *testing.T) {
	if !isASCIIAlnum("azAZ09") {
		t.Error("azAZ09 refused")
	}
	for _, c := range "`{@[/:_-é" {
		if isASCIIAlnum("AC" + string(c)) {
			t.Errorf("%q accepted", c)
		}
	}
}

// TestReplaceFoldAtStart: a contact at the very start of a server's reply
// is replaced too.
func TestReplaceFoldAtStart(t *testing.T) {
	if got := replaceFold("LINA@Example.com rejected; lina@example.com unknown", "lina@example.com", "***"); got != "*** rejected; *** unknown" {
		t.Errorf("replaceFold = %q", got)
	}
}

// TestRedactorShortestSecret: a secret of MinSecretLength bytes is
// redacted; a shorter one is left (it would match common words).
func TestRedactorShortestSecret(t *testing.T) {
	r := NewRedactor(Secret{Value: strings.Repeat("k", MinSecretLength)}, Secret{Value: "short"})
	in := "key " + strings.Repeat("k", MinSecretLength) + " and short"
	if got, want := r.Secrets(in), "key *** and short"; got != want {
		t.Errorf("Secrets(%q) = %q, want %q", in, got, want)
	}
}

// TestMaskPhoneRunsEdges: the national number alone is found; a number of
// six national digits is looked for (five are not); a bracket opened
// before "+" and closed inside the number goes with it; a '(' at the end
// of the text is only text.
func TestMaskPhoneRunsEdges(t *testing.T) {
	for _, tt := range []struct{ phone, in, want string }{
		{testPhone, "call 50001234 now", "call +965****1234 now"},
		{testPhone, "call (+965) 5000 1234 now", "call +965****1234 now"},
		{testPhone, "call (+96550001234 now", "call (+965****1234 now"},
		{testPhone, "call 96550001234 (", "call +965****1234 ("},
		{"+447911123456", "to 7911123456.", "to +44****3456."},
		{"+96512345", "to 12345", "to 12345"}, // five national digits: too short to look for
	} {
		if got := NewRedactor().Text(schemas.ChannelSMS, tt.phone, tt.in); got != tt.want {
			t.Errorf("Text(sms, %s, %q) = %q, want %q", tt.phone, tt.in, got, tt.want)
		}
	}
	// Six national digits: +965 and 123456 (not a Kuwaiti number, but
	// written as one, so nationalNumber takes the digits after the code).
	six := nationalNumber("+965123456")
	if len(six) != 6 {
		t.Fatalf("national number of +965123456: %q", six)
	}
	if got := maskPhoneRuns("to "+six+".", "+965123456", "M"); got != "to M." {
		t.Errorf("a six-digit national number: %q, want it masked", got)
	}
}

// TestWebhookCredentialWords: each word of a credential header of at
// least 8 bytes is a secret of its own (the token of "Bearer <token>").
func TestWebhookCredentialWords(t *testing.T) {
	secrets := HeaderSecrets(map[string]string{"Authorization": "Bearer abcdefgh", "X-Trace": "not-a-secret-value"})
	var got []string
	for _, s := range secrets {
		got = append(got, s.Value)
	}
	if strings.Join(got, "|") != "Bearer abcdefgh|abcdefgh" {
		t.Errorf("secrets of the headers: %q", got)
	}
}

// TestFullJitterReachesCeiling: a backoff is drawn from [0, ceiling], the
// ceiling included (full jitter); 2000 draws over three values meet each.
func TestFullJitterReachesCeiling(t *testing.T) {
	p := RetryPolicy{InitialBackoff: 2, MaxBackoff: 2}
	seen := map[time.Duration]bool{}
	for range 2000 {
		d := p.backoff(1)
		if d < 0 || d > 2 {
			t.Fatalf("backoff %d outside [0, 2]", d)
		}
		seen[d] = true
	}
	if len(seen) != 3 {
		t.Errorf("draws met %v, want 0, 1 and 2 ns", seen)
	}
}

// TestConsolePrintsWhatIsThere: the console provider prints the parts a
// message has and no empty ones.
func TestConsolePrintsWhatIsThere(t *testing.T) {
	for _, tt := range []struct {
		m          Message
		has, hasNo []string
	}{
		{Message{Channel: schemas.ChannelSMS, To: testPhone, Text: "Paid."}, []string{"Paid.\n"}, []string{"Subject:", "HTML:"}},
		{Message{Channel: schemas.ChannelEmail, To: testEmail, Subject: "Receipt", HTML: "<p>x</p>"}, []string{"Subject: Receipt\n", "HTML: <p>x</p>\n"}, []string{"\n\n"}},
	} {
		var b bytes.Buffer
		if _, err := NewConsole(&b).Send(context.Background(), tt.m); err != nil {
			t.Fatal(err)
		}
		for _, s := range tt.has {
			if !strings.Contains(b.String(), s) {
				t.Errorf("console output %q lacks %q", b.String(), s)
			}
		}
		for _, s := range tt.hasNo {
			if strings.Contains(b.String(), s) {
				t.Errorf("console output %q has %q", b.String(), s)
			}
		}
	}
}

// TestStoppedBeforeAnyAttempt: a channel whose context ended before its
// first attempt says so without counting attempts.
func TestStoppedBeforeAnyAttempt(t *testing.T) {
	prov := &okProvider{name: "ok"}
	d := newTestDispatcher(t, map[schemas.Channel]Provider{schemas.ChannelSMS: prov}, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c := d.Deliver(ctx, command(schemas.ChannelSMS), paidTxn()).Channels[0]
	if c.Attempts != 0 || c.Detail != "provider unavailable (stopped: context canceled)" {
		t.Errorf("stopped before the first attempt: %+v", c)
	}
	if len(prov.sent()) != 0 {
		t.Error("sent after the context ended")
	}
}

// TestRejectionDetails: the detail of a rejection names what is missing.
func TestRejectionDetails(t *testing.T) {
	for _, tt := range []struct {
		name      string
		ch        schemas.Channel
		txn       func(*schemas.PaymentEvent)
		templates TemplateConfig
		want      string
	}{
		{"no email", schemas.ChannelEmail, func(x *schemas.PaymentEvent) { x.CustomerEmail = "" }, nil, "the transaction has no customer email"},
		{"no phone", schemas.ChannelSMS, func(x *schemas.PaymentEvent) { x.CustomerPhone = "" }, nil, "the transaction has no customer phone"},
		{"no en template", schemas.ChannelSMS, nil, TemplateConfig{"sms": {"failed": {"en": {Text: "x"}}}}, "no sms template for state paid in en"},
		{"no ar nor en template", schemas.ChannelSMS, func(x *schemas.PaymentEvent) { x.Language = schemas.LanguageAR },
			TemplateConfig{"sms": {"failed": {"en": {Text: "x"}}}}, "no sms template for state paid in ar or en"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			txn := paidTxn()
			if tt.txn != nil {
				tt.txn(&txn)
			}
			d := newTestDispatcher(t, map[schemas.Channel]Provider{tt.ch: &okProvider{name: "ok"}}, nil, nil)
			if tt.templates != nil {
				tpl, err := ParseTemplates(tt.templates)
				if err != nil {
					t.Fatal(err)
				}
				d.platform.templates = tpl
			}
			if c := d.Deliver(context.Background(), command(tt.ch), txn).Channels[0]; c.Detail != tt.want {
				t.Errorf("detail %q, want %q", c.Detail, tt.want)
			}
		})
	}
}

// TestBodyStart: a peer's answer in a detail is its first 200 bytes on one
// line, cut before a character the 200th byte would split.
func TestBodyStart(t *testing.T) {
	a := strings.Repeat("a", 200)
	for _, tt := range []struct{ in, want string }{
		{a, a},
		{a + "b", a},
		{a[:199] + "é", a[:199]},  // é's first byte is the 200th
		{a[:198] + "€x", a[:198]}, // € is 3 bytes: two of them fit
		{a[:197] + "€x", a[:197] + "€"},
		{" one\n\ttwo  three ", "one two three"},
	} {
		if got := bodyStart([]byte(tt.in)); got != tt.want {
			t.Errorf("bodyStart(%q...%q) = ...%q (%d bytes), want %d bytes", tt.in[:4], tt.in[max(0, len(tt.in)-6):], got[max(0, len(got)-6):], len(got), len(tt.want))
		}
	}
}

// TestParseRetryAfterEdges: whole seconds up to the largest a Duration
// holds are taken as they are; 0, negative and unreadable values are no
// wait (the backoff's own applies).
func TestParseRetryAfterEdges(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want time.Duration
	}{
		{"9223372036", 9223372036 * time.Second},
		{"9223372037", math.MaxInt64},
		{" 7 ", 7 * time.Second},
		{"0", 0},
		{"-5", 0},
		{"soon", 0},
		{"", 0},
	} {
		if got := parseRetryAfter(tt.in); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}
