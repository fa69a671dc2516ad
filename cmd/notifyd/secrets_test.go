package main

import (
	"bytes"
	"encoding/base64"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/notifyd/notifyd/dispatch"
)

// TestLogHidesSecrets: whatever a log line carries (a message, an error
// from a library, an attribute), every form of a configured secret is
// hidden, in both log formats.
func TestLogHidesSecrets(t *testing.T) {
	const sid, token = "AC0123456789abcdef0123456789abcdef", "tw-t0ken/with+odd=chars"
	r := dispatch.NewRedactor(dispatch.Secret{Value: token, User: sid})
	basic := base64.StdEncoding.EncodeToString([]byte(sid + ":" + token))
	for _, format := range []string{"json", "text"} {
		var out bytes.Buffer
		log := newLogger(LogConfig{Level: "info", Format: format}, &out, r)
		log.Error("provider said Authorization: Basic "+basic,
			"error", errors.New(`post "https://api.example/?token=`+url.QueryEscape(token)+`": refused`),
			"echo", token)
		got := out.String()
		for _, leak := range []string{token, basic, url.QueryEscape(token)} {
			if strings.Contains(got, leak) {
				t.Errorf("%s log shows %q:\n%s", format, leak, got)
			}
		}
		if strings.Count(got, "***") < 3 {
			t.Errorf("%s log: want three *** in\n%s", format, got)
		}
	}
}
