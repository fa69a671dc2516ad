package dispatch

import (
	"encoding/base64"
	"net/mail"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"
	gomail "github.com/wneessen/go-mail"

	"github.com/notifyd/notifyd/schemas"
)

// The email an SMTP provider sends: its MIME message (go-mail), its
// Message-ID, and the encodings of its parts.

// compose builds the MIME message.
func (s *SMTP) compose(m Message, rcpt *mail.Address, id string) (*gomail.Msg, error) {
	if m.Text == "" && m.HTML == "" {
		return nil, Permanent("message has neither a text nor an HTML body", nil)
	}
	msg := gomail.NewMsg(
		gomail.WithNoDefaultUserAgent(),
		gomail.WithCharset(gomail.CharsetUTF8),
		gomail.WithEncoding(transferEncoding(m.Subject)), // the Subject's RFC 2047 encoding: Q or B
	)
	msg.FromMailAddress(s.from)
	msg.ToMailAddress(rcpt)
	msg.Subject(foldableSubject(m.Subject))
	msg.SetDate()
	msg.SetMessageIDWithValue(id)
	msg.SetGenHeader(gomail.Header("Auto-Submitted"), "auto-generated")
	switch {
	case m.Text != "" && m.HTML != "":
		msg.SetBodyString(gomail.TypeTextPlain, m.Text, gomail.WithPartEncoding(transferEncoding(m.Text)))
		msg.AddAlternativeString(gomail.TypeTextHTML, m.HTML, gomail.WithPartEncoding(transferEncoding(m.HTML)))
	case m.Text != "":
		msg.SetBodyString(gomail.TypeTextPlain, m.Text, gomail.WithPartEncoding(transferEncoding(m.Text)))
	default:
		msg.SetBodyString(gomail.TypeTextHTML, m.HTML, gomail.WithPartEncoding(transferEncoding(m.HTML)))
	}
	return msg, nil
}

// messageID returns the Message-ID, without angle brackets, of the email of
// the command commandID: "<uuid>@<from domain>", the uuid derived from the
// command id (random when there is none).
func (s *SMTP) messageID(commandID string) string {
	u := uuid.New()
	if commandID != "" {
		u = uuid.NewSHA1(s.msgIDSpace, []byte(commandID+":"+string(schemas.ChannelEmail)))
	}
	return u.String() + "@" + s.msgIDDomain
}

// transferEncoding picks base64 for text that is more than one sixth
// non-ASCII bytes, where it is the shorter encoding (Arabic), and
// quoted-printable otherwise, which keeps mostly ASCII text readable.
func transferEncoding(s string) gomail.Encoding {
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			n++
		}
	}
	if n*6 > len(s) {
		return gomail.EncodingB64
	}
	return gomail.EncodingQP
}

// bareAddress returns the address in angle brackets, without display name.
func bareAddress(a *mail.Address) string {
	return (&mail.Address{Address: a.Address}).String()
}

// messageIDDomain returns the domain of addr if it can appear in a
// Message-ID as is, else "notifyd.invalid".
func messageIDDomain(addr string) string {
	d := addr[strings.LastIndexByte(addr, '@')+1:]
	if d == "" {
		return "notifyd.invalid"
	}
	for i := 0; i < len(d); i++ {
		c := d[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return "notifyd.invalid"
		}
	}
	return strings.ToLower(d)
}

// foldableWord is the longest run without white space a header line may
// carry and still be folded under 78 characters.
const foldableWord = 60

// foldableSubject returns subject as go-mail can fold it: unchanged when
// every word is short enough (go-mail folds at spaces, and RFC 2047
// encodes non-ASCII subjects in short encoded-words), else as a sequence
// of RFC 2047 encoded-words of at most 75 characters separated by spaces,
// which readers join back into the subject (RFC 2047 §6.2). Without this a
// long word (a name without spaces) stays on one header line longer than
// RFC 5322's 998 characters, which servers refuse.
func foldableSubject(subject string) string {
	long := false
	for _, w := range strings.Fields(subject) {
		if len(w) > foldableWord {
			long = true
			break
		}
	}
	if !long {
		return subject
	}
	// 45 bytes of UTF-8 become 60 characters of base64; with "=?UTF-8?B?"
	// and "?=" an encoded-word is 72 characters. Chunks end on rune
	// boundaries.
	const chunk = 45
	var words []string
	for len(subject) > 0 {
		n := min(chunk, len(subject))
		for n < len(subject) && !utf8.RuneStart(subject[n]) {
			n--
		}
		words = append(words, "=?UTF-8?B?"+base64.StdEncoding.EncodeToString([]byte(subject[:n]))+"?=")
		subject = subject[n:]
	}
	return strings.Join(words, " ")
}
