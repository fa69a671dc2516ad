package dispatch

import (
	"cmp"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"slices"
	"strings"

	"github.com/nyaruka/phonenumbers"

	"github.com/notifyd/notifyd/schemas"
)

// Secret is a configured secret: a password, token or header value. User,
// when set, is who the secret authenticates (an account SID, a username):
// HTTP Basic and SMTP AUTH send the two together, base64-encoded, and a
// peer that echoes the request echoes that encoding.
type Secret struct {
	Value string
	User  string
}

// Redactor hides secrets and contacts in text that leaves notifyd: provider
// answers and errors in results and logs. It is the one place that knows
// how a secret or a contact can be written:
//
//   - a secret as itself, URL-encoded (query and path forms),
//     JSON-escaped ('/' as is and as "\/", '&' as is and as \u0026),
//     base64 (standard and URL alphabets, with and without padding), and
//     with its user as "user:secret" and "\x00user\x00secret" (HTTP Basic,
//     SMTP AUTH PLAIN) base64-encoded; each becomes "***", matched without
//     regard to ASCII case (a peer may echo a percent-encoding in lower
//     case);
//   - an email address in any ASCII case, also URL-encoded;
//   - a phone number in any spacing or punctuation ("+965 5000 9876",
//     "(965) 5000-9876", "0096550009876"): a run of digits and separators
//     whose digits end with the number's national significant number
//     becomes the contact's mask.
//
// Secrets shorter than MinSecretLength characters are not looked for:
// they would match ordinary words and numbers (a webhook header "X-Version:
// 2" is no secret); configure real secrets. The URL-encoded forms are
// matched in either ASCII case (a peer may write %2f), the others exactly.
//
// A nil *Redactor hides contacts only. It is safe for concurrent use.
type Redactor struct {
	forms []secretForm
}

// MinSecretLength is the length under which a secret is not looked for.
const MinSecretLength = 6

// secretForm is one way a secret can be written; fold matches it in
// either ASCII case.
type secretForm struct {
	text, lower string
	fold        bool
}

// NewRedactor returns a Redactor for secrets; empty and short values are
// ignored.
func NewRedactor(secrets ...Secret) *Redactor {
	seen := map[string]bool{}
	var forms []secretForm
	add := func(f string, fold bool) {
		if len(f) >= MinSecretLength && !seen[f] {
			seen[f] = true
			forms = append(forms, secretForm{text: f, lower: strings.ToLower(f), fold: fold})
		}
	}
	b64 := func(s string) {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			add(enc.EncodeToString([]byte(s)), false)
		}
	}
	for _, s := range secrets {
		if len(s.Value) < MinSecretLength {
			continue
		}
		add(s.Value, false)
		add(url.QueryEscape(s.Value), true)
		add(url.PathEscape(s.Value), true)
		for _, j := range jsonForms(s.Value) {
			add(j, false)
		}
		b64(s.Value)
		if s.User != "" {
			b64(s.User + ":" + s.Value)
			b64("\x00" + s.User + "\x00" + s.Value)
		}
	}
	// Longest first: a form that holds another is replaced whole.
	slices.SortStableFunc(forms, func(a, b secretForm) int { return cmp.Compare(len(b.text), len(a.text)) })
	return &Redactor{forms: forms}
}

// jsonForms are v as JSON encoders write it inside a string: with and
// without HTML escaping (& as \u0026), '/' as itself and as "\/".
func jsonForms(v string) []string {
	var out []string
	for _, html := range []bool{true, false} {
		var b strings.Builder
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(html)
		if enc.Encode(v) != nil {
			continue
		}
		j := strings.TrimSuffix(b.String(), "\n")
		j = j[1 : len(j)-1]
		out = append(out, j, strings.ReplaceAll(j, "/", `\/`))
	}
	return out
}

// Secrets replaces every form of every secret in s by "***". A text that
// holds none (the usual case: it runs on every log line) costs one search
// per form.
func (r *Redactor) Secrets(s string) string {
	if r == nil || len(r.forms) == 0 {
		return s
	}
	lower := ""
	for _, f := range r.forms {
		if !f.fold {
			if strings.Contains(s, f.text) {
				s = strings.ReplaceAll(s, f.text, masked)
				lower = ""
			}
			continue
		}
		if lower == "" {
			lower = strings.ToLower(s)
		}
		if strings.Contains(lower, f.lower) {
			s = replaceFold(s, f.text, masked)
			lower = ""
		}
	}
	return s
}

// Text hides the secrets and the contact of channel ch in s; the contact
// becomes MaskRecipient(ch, contact).
func (r *Redactor) Text(ch schemas.Channel, contact, s string) string {
	s = r.Secrets(s)
	if contact == "" {
		return s
	}
	mask := MaskRecipient(ch, contact)
	if ch == schemas.ChannelEmail {
		for _, form := range emailForms(contact) {
			s = replaceFold(s, form, mask)
		}
		return s
	}
	return maskPhoneRuns(s, contact, mask)
}

// emailForms are the ways an address is written in a text: as is,
// URL-encoded whole or in part ('@' as %40, '+' as %2B), JSON-escaped
// ('+' as \u002b, as some encoders write it); all matched in any case.
func emailForms(email string) []string {
	forms := []string{email, url.QueryEscape(email), strings.ReplaceAll(email, "@", "%40"), strings.ReplaceAll(email, "+", "%2B"),
		strings.ReplaceAll(email, "+", `\u002b`)}
	forms = append(forms, jsonForms(email)...)
	slices.Sort(forms)
	forms = slices.Compact(forms)
	slices.SortStableFunc(forms, func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	return forms
}

// phoneSeparators may stand between the digits of a phone number as people
// and systems write it (and the no-break space, U+00A0).
const phoneSeparators = " -.()/"

// minPhoneDigits: a national number this short is not looked for (it would
// match ordinary numbers in a text).
const minPhoneDigits = 6

// maskPhoneRuns replaces every run of digits and separators in s whose
// digits hold phone's national significant number by mask. A run ends at
// the digit that completes the number, so a number written twice ("96550001234
// (+96550001234)") is masked twice; a run opened by '(' keeps it when it
// does not also close it (the bracket was around the number, not in it).
func maskPhoneRuns(s, phone, mask string) string {
	nsn := nationalNumber(phone)
	if len(nsn) < minPhoneDigits {
		return s
	}
	var b strings.Builder
	i := 0
	for i < len(s) {
		c := s[i]
		opens := c == '(' && i+1 < len(s) && (isDigit(s[i+1]) || s[i+1] == '+')
		if !(isDigit(c) || c == '+' || opens) {
			b.WriteByte(c)
			i++
			continue
		}
		// A run: digits and separators, up to the digit that completes the
		// number, else to its last digit.
		j, last, found := i, -1, false
		var digits []byte
	run:
		for j < len(s) && !found {
			switch {
			case isDigit(s[j]):
				digits = append(digits, s[j])
				last = j
				found = len(digits) >= len(nsn) && string(digits[len(digits)-len(nsn):]) == nsn
			case s[j] == '+' || strings.IndexByte(phoneSeparators, s[j]) >= 0:
			case strings.HasPrefix(s[j:], "\u00a0"):
				j++ // the no-break space's first byte; its second follows
			default:
				break run
			}
			j++
		}
		switch {
		case last < 0:
			b.WriteByte(c)
			i++
			continue
		case !found:
			b.WriteString(s[i : last+1])
		case opens && !strings.Contains(s[i:last+1], ")"):
			b.WriteString("(" + mask)
		default:
			b.WriteString(mask)
		}
		i = last + 1
	}
	return b.String()
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// nationalNumber is phone's national significant number, or its digits
// when it does not parse.
func nationalNumber(phone string) string {
	if num, err := phonenumbers.Parse(phone, ""); err == nil {
		if nsn := phonenumbers.GetNationalSignificantNumber(num); nsn != "" {
			return nsn
		}
	}
	var b strings.Builder
	for i := 0; i < len(phone); i++ {
		if isDigit(phone[i]) {
			b.WriteByte(phone[i])
		}
	}
	return b.String()
}
