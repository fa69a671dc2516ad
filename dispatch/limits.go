package dispatch

import (
	"fmt"
	"unicode/utf8"

	"github.com/notifyd/notifyd/schemas"
)

// The sizes a rendered message may have, per channel, checked after the
// template is rendered and before any provider is called: a message over
// them is rejected with message_too_long (status rejected, attempts 0), as
// the providers would refuse it anyway (Twilio answers 21617 over 1,600
// characters; an SMTP server 554 for a header line over RFC 5322's 998).
// The limits are the channel's, whatever provider sends it, so a webhook
// provider gets what the real services take.
const (
	// MaxSMSCharacters is Twilio's limit on a message Body.
	MaxSMSCharacters = 1600
	// MaxEmailSubjectCharacters is RFC 5322's line limit, applied to the
	// subject before folding: a subject that long is no subject.
	MaxEmailSubjectCharacters = 998
	// MaxEmailBodyBytes bounds each of the text and the HTML body.
	MaxEmailBodyBytes = 1 << 20
	// MaxWhatsAppParamsCharacters is Meta's limit on a template's body
	// text (1,024 characters): the body parameters alone must fit in it.
	MaxWhatsAppParamsCharacters = 1024
)

// tooLong reports why a rendered message of channel ch exceeds its
// channel's limits ("" when it does not). The detail gives sizes only,
// never the content (it holds the customer's data).
func tooLong(ch schemas.Channel, r Rendered) string {
	switch ch {
	case schemas.ChannelSMS:
		if n := utf8.RuneCountInString(r.Text); n > MaxSMSCharacters {
			return fmt.Sprintf("the rendered sms text is %d characters, at most %d can be sent", n, MaxSMSCharacters)
		}
	case schemas.ChannelEmail:
		if n := utf8.RuneCountInString(r.Subject); n > MaxEmailSubjectCharacters {
			return fmt.Sprintf("the rendered email subject is %d characters, at most %d can be sent", n, MaxEmailSubjectCharacters)
		}
		for _, body := range []struct{ name, text string }{{"text", r.Text}, {"HTML", r.HTML}} {
			if len(body.text) > MaxEmailBodyBytes {
				return fmt.Sprintf("the rendered email %s body is %d bytes, at most %d can be sent", body.name, len(body.text), MaxEmailBodyBytes)
			}
		}
	case schemas.ChannelWhatsApp:
		if r.WhatsApp == nil {
			return ""
		}
		n := 0
		for _, p := range r.WhatsApp.Params {
			n += utf8.RuneCountInString(p)
		}
		if n > MaxWhatsAppParamsCharacters {
			return fmt.Sprintf("the whatsapp template's parameters are %d characters, at most %d fit a template body", n, MaxWhatsAppParamsCharacters)
		}
	}
	return ""
}
