package dispatch

import (
	"errors"
	"net/mail"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/notifyd/notifyd/schemas"
	"github.com/nyaruka/phonenumbers"
)

// masked is what a contact too malformed to mask partially becomes.
const masked = "***"

// maxEmailLength is the longest address accepted (RFC 5321 path limit).
const maxEmailLength = 254

// MaskEmail masks an email address for logs and results: the first character
// of the local part, "***", and the domain ("l***@example.com"). A one-
// character local part is hidden entirely ("***@example.com"). Input too
// malformed to mask safely (no "@", empty local part or domain, a domain with
// characters no domain has, invalid UTF-8) becomes "***".
func MaskEmail(s string) string {
	s = strings.TrimSpace(s)
	if !utf8.ValidString(s) {
		return masked
	}
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at == len(s)-1 {
		return masked
	}
	local, domain := s[:at], s[at+1:]
	for _, r := range domain {
		if !(unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r) || strings.ContainsRune(".-[]:", r)) {
			return masked
		}
	}
	first, size := utf8.DecodeRuneInString(local)
	if size == len(local) || !(unicode.IsLetter(first) || unicode.IsDigit(first)) {
		return masked + "@" + domain
	}
	return string(first) + masked + "@" + domain
}

// MaskPhone masks a phone number in international form for logs and
// results: "+", the country calling code, "****" and the last four digits
// of the national number ("+965****1234"). Input that does not start with
// "+", does not parse as a phone number, or has too few digits to hide any
// becomes "***".
func MaskPhone(s string) string {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, "+") {
		return masked
	}
	num, err := phonenumbers.Parse(s, "")
	if err != nil {
		return masked
	}
	nsn := phonenumbers.GetNationalSignificantNumber(num)
	if len(nsn) <= 4 || num.GetCountryCode() == 0 {
		return masked
	}
	return "+" + strconv.Itoa(int(num.GetCountryCode())) + "****" + nsn[len(nsn)-4:]
}

// MaskRecipient masks contact as the contact of channel ch: MaskEmail for
// email, MaskPhone for sms and whatsapp, "***" for anything else. An empty
// contact stays empty.
func MaskRecipient(ch schemas.Channel, contact string) string {
	if contact == "" {
		return ""
	}
	switch ch {
	case schemas.ChannelEmail:
		return MaskEmail(contact)
	case schemas.ChannelSMS, schemas.ChannelWhatsApp:
		return MaskPhone(contact)
	}
	return masked
}

// ValidateEmail checks that s is a single bare email address (no display
// name, no angle brackets, no surrounding space) that net/mail accepts. The
// error never quotes s.
func ValidateEmail(s string) error {
	if s == "" {
		return errors.New("email address is empty")
	}
	if len(s) > maxEmailLength {
		return errors.New("email address is longer than 254 bytes")
	}
	addr, err := mail.ParseAddress(s)
	if err != nil {
		msg := strings.TrimPrefix(err.Error(), "mail: ")
		if i := strings.Index(msg, ", got "); i >= 0 {
			msg = msg[:i] // net/mail quotes part of the input here
		}
		return errors.New("not a valid email address: " + msg)
	}
	if addr.Name != "" || addr.Address != s {
		return errors.New("not a bare email address (display name, brackets or comments are not allowed)")
	}
	return nil
}

// ValidatePhone checks that s is a valid phone number in E.164 form: it
// starts with "+", parses with github.com/nyaruka/phonenumbers, is a valid
// number for its country, has no extension, and is written exactly as E.164
// ("+" and digits only). The error never quotes s.
func ValidatePhone(s string) error {
	if s == "" {
		return errors.New("phone number is empty")
	}
	if !strings.HasPrefix(s, "+") {
		return errors.New("phone number must start with + and the country calling code")
	}
	num, err := phonenumbers.Parse(s, "")
	if err != nil {
		return errors.New("phone number does not parse: " + err.Error())
	}
	if !phonenumbers.IsValidNumber(num) {
		return errors.New("not a valid phone number for its country")
	}
	if num.GetExtension() != "" {
		return errors.New("phone number must not have an extension")
	}
	if phonenumbers.Format(num, phonenumbers.E164) != s {
		return errors.New("phone number is not in E.164 form (+ and digits only)")
	}
	return nil
}

// contactFor returns the transaction's contact for channel ch.
func contactFor(ch schemas.Channel, txn *schemas.PaymentEvent) string {
	switch ch {
	case schemas.ChannelEmail:
		return txn.CustomerEmail
	case schemas.ChannelSMS, schemas.ChannelWhatsApp:
		return txn.CustomerPhone
	}
	return ""
}

// validateContact validates contact as the contact of channel ch.
func validateContact(ch schemas.Channel, contact string) error {
	if ch == schemas.ChannelEmail {
		return ValidateEmail(contact)
	}
	return ValidatePhone(contact)
}
