package dispatch

import (
	"strings"
	"testing"

	"github.com/notifyd/notifyd/schemas"
)

func TestMaskEmail(t *testing.T) {
	tests := []struct{ in, want string }{
		{"lina@example.com", "l***@example.com"},
		{"Lina.Haddad+tag@mail.example.co", "L***@mail.example.co"},
		{"  lina@example.com  ", "l***@example.com"},
		{"l@example.com", "***@example.com"},
		{"ليلى@example.com", "ل***@example.com"},
		{"lina@مثال.السعودية", "l***@مثال.السعودية"},
		{"a@b@example.com", "a***@example.com"},
		{`"quoted"@example.com`, "***@example.com"},
		{"user@[192.0.2.1]", "u***@[192.0.2.1]"},
		{"Lina <lina@example.com>", "***"},
		{"no-at-sign", "***"},
		{"@example.com", "***"},
		{"lina@", "***"},
		{"lina@exa mple.com", "***"},
		{"", "***"},
		{"   ", "***"},
		{"\xff\xfe@example.com", "***"},
	}
	for _, tt := range tests {
		if got := MaskEmail(tt.in); got != tt.want {
			t.Errorf("MaskEmail(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestMaskPhone(t *testing.T) {
	tests := []struct{ in, want string }{
		{"+96550001234", "+965****1234"},
		{"+447911123456", "+44****3456"},
		{"+14155552671", "+1****2671"},
		{"+965 5000-1234", "+965****1234"},
		{" +96550001234 ", "+965****1234"},
		{"+٩٦٥٥٠٠٠١٢٣٤", "+965****1234"}, // Arabic-Indic digits
		{"96550001234", "***"},           // no +
		{"0096550001234", "***"},
		{"+12", "***"},
		{"+", "***"},
		{"+965", "***"},
		{"hello", "***"},
		{"+hello", "***"},
		{"مرحبا", "***"},
		{"", "***"},
		{"\xff", "***"},
	}
	for _, tt := range tests {
		if got := MaskPhone(tt.in); got != tt.want {
			t.Errorf("MaskPhone(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestMaskRecipient(t *testing.T) {
	tests := []struct {
		ch       schemas.Channel
		in, want string
	}{
		{schemas.ChannelEmail, "lina@example.com", "l***@example.com"},
		{schemas.ChannelSMS, "+96550001234", "+965****1234"},
		{schemas.ChannelWhatsApp, "+96550001234", "+965****1234"},
		{schemas.ChannelEmail, "+96550001234", "***"},
		{schemas.ChannelSMS, "lina@example.com", "***"},
		{schemas.ChannelEmail, "", ""},
		{"fax", "+96550001234", "***"},
	}
	for _, tt := range tests {
		if got := MaskRecipient(tt.ch, tt.in); got != tt.want {
			t.Errorf("MaskRecipient(%s, %q) = %q, want %q", tt.ch, tt.in, got, tt.want)
		}
	}
}

func TestValidateEmail(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"lina@example.com", true},
		{"lina.haddad+tag@mail.example.co", true},
		{"ليلى@example.com", true}, // net/mail accepts UTF-8 local parts
		{"", false},
		{"lina", false},
		{"lina@", false},
		{"@example.com", false},
		{"Lina <lina@example.com>", false},
		{"<lina@example.com>", false},
		{" lina@example.com", false},
		{"lina@example.com, other@example.com", false},
		{"lina@example.com (comment)", false},
		{"li na@example.com", false},
		{strings.Repeat("a", 250) + "@example.com", false},
	}
	for _, tt := range tests {
		err := ValidateEmail(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateEmail(%q) = %v, want ok=%v", tt.in, err, tt.ok)
		}
		if err != nil && tt.in != "" && strings.Contains(err.Error(), tt.in) {
			t.Errorf("ValidateEmail(%q) error quotes the input: %v", tt.in, err)
		}
	}
}

func TestValidatePhone(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"+96550001234", true},
		{"+447911123456", true},
		{"+14155552671", true},
		{"", false},
		{"96550001234", false},         // no +
		{"0096550001234", false},       // international prefix, not +
		{"+965 5000 1234", false},      // not E.164 form
		{"+965-5000-1234", false},      // not E.164 form
		{"+٩٦٥٥٠٠٠١٢٣٤", false},        // Arabic-Indic digits are not E.164
		{"+96550001234 ext. 5", false}, // extension
		{"+9655000", false},            // too short for Kuwait
		{"+1234", false},
		{"+999123456789", false}, // no such country code
		{"+1800FLOWERS", false},  // letters
		{"+", false},
		{"hello", false},
		{"+96550001234567890", false},
	}
	for _, tt := range tests {
		err := ValidatePhone(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("ValidatePhone(%q) = %v, want ok=%v", tt.in, err, tt.ok)
		}
		if err != nil && len(tt.in) > 1 && strings.Contains(err.Error(), tt.in) {
			t.Errorf("ValidatePhone(%q) error quotes the input: %v", tt.in, err)
		}
	}
}
