package dispatch

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/notifyd/notifyd/schemas"
)

// TestProvidersFollowNoRedirect: a provider answering a 3xx that points
// elsewhere makes no request there (the message and the credential
// headers stay where they were configured to go); the answer is a
// permanent failure blamed on the account's configuration (the channel
// fails over), its status in the detail. Each HTTP provider kind, each
// redirect status, with no client given and with one that would follow.
func TestProvidersFollowNoRedirect(t *testing.T) {
	var elsewhere atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"id":"m-1","sid":"SM1","messages":[{"id":"wamid.1"}]}`))
	}))
	defer other.Close()
	kinds := []struct {
		name string
		msg  Message
		make func(base string, client *http.Client) (Provider, error)
	}{
		{"webhook", Message{Channel: schemas.ChannelEmail, To: "layla@example.com", CommandID: "cmd-1", Subject: "s", Text: "t"},
			func(base string, c *http.Client) (Provider, error) {
				return NewWebhook(WebhookConfig{URL: base + "/send", Headers: map[string]string{"X-Api-Key": "k-0123456789"}}, c)
			}},
		{"twilio", Message{Channel: schemas.ChannelSMS, To: testPhone, CommandID: "cmd-1", Text: "t"},
			func(base string, c *http.Client) (Provider, error) {
				return NewTwilio(TwilioConfig{BaseURL: base, AccountSID: twilioSID, AuthToken: "tok-0123456789", From: twilioFrom}, c)
			}},
		{"meta", waMessage(), func(base string, c *http.Client) (Provider, error) {
			return NewMeta(MetaConfig{BaseURL: base, PhoneNumberID: metaPhoneID, AccessToken: metaToken}, c)
		}},
	}
	for _, k := range kinds {
		for _, status := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
			for _, client := range []*http.Client{nil, {}} {
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Location", other.URL+"/elsewhere")
					w.WriteHeader(status)
				}))
				p, err := k.make(srv.URL, client)
				if err != nil {
					t.Fatal(err)
				}
				before := elsewhere.Load()
				_, err = p.Send(context.Background(), k.msg)
				srv.Close()
				if n := elsewhere.Load() - before; n != 0 {
					t.Errorf("%s, %d: %d requests followed the redirect", k.name, status, n)
				}
				var pe *ProviderError
				if !errors.As(err, &pe) || !pe.Permanent || !pe.Account {
					t.Errorf("%s, %d: error %v, want a permanent account fault", k.name, status, err)
					continue
				}
				if !strings.Contains(pe.Detail, "HTTP "+strconv.Itoa(status)) {
					t.Errorf("%s, %d: detail %q does not name the status", k.name, status, pe.Detail)
				}
			}
		}
	}
}
