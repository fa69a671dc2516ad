package dispatch

import (
	"strings"
	"testing"
	"unicode"

	"github.com/notifyd/notifyd/schemas"
)

func hasArabic(s string) bool {
	for _, r := range s {
		if unicode.Is(unicode.Arabic, r) {
			return true
		}
	}
	return false
}

func TestDefaultTemplatesCoverMatrix(t *testing.T) {
	tpl := defaultTemplates(t)
	cfg := DefaultTemplates()
	data := sampleData
	for _, ch := range schemas.Channels {
		for _, st := range schemas.States {
			_, inCfg := cfg[string(ch)][string(st)]
			if inCfg != Supports(ch, st) {
				t.Errorf("defaults have %s.%s = %v, matrix says %v", ch, st, inCfg, Supports(ch, st))
			}
			if !Supports(ch, st) {
				continue
			}
			for _, lang := range []schemas.Language{schemas.LanguageEN, schemas.LanguageAR} {
				if _, ok := cfg[string(ch)][string(st)][string(lang)]; !ok {
					t.Errorf("defaults lack %s.%s.%s", ch, st, lang)
				}
				r, ok, err := tpl.Render(ch, st, lang, data)
				if err != nil || !ok {
					t.Fatalf("Render(%s, %s, %s) = ok %v, err %v", ch, st, lang, ok, err)
				}
				switch ch {
				case schemas.ChannelEmail:
					if r.Subject == "" || r.Text == "" || r.HTML == "" {
						t.Errorf("%s.%s.%s: empty email part: %+v", ch, st, lang, r)
					}
					if !strings.Contains(r.Text, "ORD-1001") || !strings.Contains(r.Subject, "ORD-1001") {
						t.Errorf("%s.%s.%s: order missing: %+v", ch, st, lang, r)
					}
					if lang == schemas.LanguageAR && !(hasArabic(r.Subject) && hasArabic(r.Text) && strings.Contains(r.HTML, `dir="rtl"`)) {
						t.Errorf("%s.%s.ar is not Arabic: %+v", ch, st, r)
					}
				case schemas.ChannelSMS:
					if r.Text == "" || r.Subject != "" || r.HTML != "" {
						t.Errorf("%s.%s.%s: bad sms: %+v", ch, st, lang, r)
					}
					if (lang == schemas.LanguageAR) != hasArabic(r.Text) {
						t.Errorf("%s.%s.%s: wrong script: %q", ch, st, lang, r.Text)
					}
				case schemas.ChannelWhatsApp:
					wa := r.WhatsApp
					if wa == nil || wa.Name != "payment_"+string(st) || len(wa.Params) != 3 {
						t.Fatalf("%s.%s.%s: bad whatsapp: %+v", ch, st, lang, wa)
					}
					wantLang := map[schemas.Language]string{schemas.LanguageEN: "en_US", schemas.LanguageAR: "ar"}[lang]
					if wa.Language != wantLang {
						t.Errorf("%s.%s.%s: language %q, want %q", ch, st, lang, wa.Language, wantLang)
					}
					if wa.Params[0] != "Lina" || wa.Params[1] != "ORD-1001" || wa.Params[2] != "12.500 KWD" {
						t.Errorf("%s.%s.%s: params %q", ch, st, lang, wa.Params)
					}
				}
			}
		}
	}
}

func TestDefaultTemplatesWithoutOptionalData(t *testing.T) {
	tpl := defaultTemplates(t)
	data := TemplateData{SessionID: "sess-9", State: "paid", Language: "en"}
	r, ok, err := tpl.Render(schemas.ChannelEmail, schemas.StatePaid, schemas.LanguageEN, data)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if r.Subject != "Payment received for your order" {
		t.Errorf("subject %q", r.Subject)
	}
	if !strings.HasPrefix(r.Text, "Dear customer,") || strings.Contains(r.Text, " of ") {
		t.Errorf("text %q", r.Text)
	}
	r, _, _ = tpl.Render(schemas.ChannelWhatsApp, schemas.StatePaid, schemas.LanguageAR, data)
	if got := r.WhatsApp.Params; got[0] != "العميل" || got[1] != "sess-9" || got[2] != "-" {
		t.Errorf("params %q", got)
	}
}

func TestRenderLanguageFallback(t *testing.T) {
	cfg := TemplateConfig{
		"sms": {
			"paid":   {"en": {Text: "EN paid {{.OrderNo}}"}},
			"failed": {"en": {Text: "EN failed"}, "ar": {Text: "AR فشل"}},
		},
	}
	tpl, err := ParseTemplates(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		st   schemas.State
		lang schemas.Language
		want string
		ok   bool
	}{
		{schemas.StatePaid, schemas.LanguageAR, "EN paid ORD-1001", true},
		{schemas.StatePaid, schemas.LanguageEN, "EN paid ORD-1001", true},
		{schemas.StatePaid, "fr", "EN paid ORD-1001", true},
		{schemas.StateFailed, schemas.LanguageAR, "AR فشل", true},
		{schemas.StateFailed, schemas.LanguageEN, "EN failed", true},
		{schemas.StateCanceled, schemas.LanguageEN, "", false},
		{schemas.StateCanceled, schemas.LanguageAR, "", false},
	}
	for _, tt := range tests {
		r, ok, err := tpl.Render(schemas.ChannelSMS, tt.st, tt.lang, sampleData)
		if err != nil || ok != tt.ok || r.Text != tt.want {
			t.Errorf("Render(sms, %s, %s) = %q, %v, %v; want %q, %v", tt.st, tt.lang, r.Text, ok, err, tt.want, tt.ok)
		}
	}
	if _, ok, _ := tpl.Render(schemas.ChannelEmail, schemas.StatePaid, schemas.LanguageEN, sampleData); ok {
		t.Error("email has no templates but Render found one")
	}
	var nilT *Templates
	if _, ok, err := nilT.Render(schemas.ChannelSMS, schemas.StatePaid, schemas.LanguageEN, sampleData); ok || err != nil {
		t.Error("nil Templates rendered")
	}
}

func TestParseTemplatesErrorsNameKey(t *testing.T) {
	email := Template{Subject: "s", Text: "t"}
	tests := []struct {
		name string
		cfg  TemplateConfig
		want string
	}{
		{"unknown channel", TemplateConfig{"fax": {"paid": {"en": email}}},
			"templates.fax: unknown channel"},
		{"unknown state", TemplateConfig{"email": {"bogus": {"en": email}}},
			"templates.email.bogus: unknown state"},
		{"unsupported state", TemplateConfig{"whatsapp": {"refunded": {"en": {Name: "n", Language: "en"}}}},
			"templates.whatsapp.refunded: whatsapp does not support state refunded"},
		{"no channel supports pending", TemplateConfig{"sms": {"pending": {"en": {Text: "x"}}}},
			"templates.sms.pending: sms does not support state pending"},
		{"unknown language", TemplateConfig{"email": {"paid": {"fr": email}}},
			"templates.email.paid.fr: unknown language"},
		{"email subject required", TemplateConfig{"email": {"paid": {"en": {Text: "t"}}}},
			"templates.email.paid.en.subject: is required"},
		{"email body required", TemplateConfig{"email": {"paid": {"en": {Subject: "s"}}}},
			"templates.email.paid.en.text: text or html is required"},
		{"email subject parse", TemplateConfig{"email": {"paid": {"en": {Subject: "{{.OrderNo", Text: "t"}}}},
			"templates.email.paid.en.subject: template: subject:1:"},
		{"email html parse", TemplateConfig{"email": {"paid": {"ar": {Subject: "s", HTML: "<p>{{if}}</p>"}}}},
			"templates.email.paid.ar.html: template: html:1:"},
		{"email html unknown field", TemplateConfig{"email": {"paid": {"en": {Subject: "s", HTML: "<p>{{.Secret}}</p>"}}}},
			"templates.email.paid.en.html: template: html:1:"},
		{"sms unknown field", TemplateConfig{"sms": {"paid": {"ar": {Text: "{{.Nope}}"}}}},
			"templates.sms.paid.ar.text: template: text:1:2: executing \"text\" at <.Nope>: can't evaluate field Nope"},
		{"sms text required", TemplateConfig{"sms": {"paid": {"en": {Text: "  "}}}},
			"templates.sms.paid.en.text: is required"},
		{"sms subject unused", TemplateConfig{"sms": {"paid": {"en": {Text: "t", Subject: "s"}}}},
			"templates.sms.paid.en.subject: not used by sms templates"},
		{"whatsapp name required", TemplateConfig{"whatsapp": {"paid": {"en": {Language: "en"}}}},
			"templates.whatsapp.paid.en.name: is required"},
		{"whatsapp language required", TemplateConfig{"whatsapp": {"paid": {"en": {Name: "payment_paid"}}}},
			"templates.whatsapp.paid.en.language: is required"},
		{"whatsapp param parse", TemplateConfig{"whatsapp": {"paid": {"en": {Name: "n", Language: "en", Params: []string{"{{.OrderNo}}", "{{.Amount"}}}}},
			"templates.whatsapp.paid.en.params[1]: template: params[1]:1:"},
		{"whatsapp param empty", TemplateConfig{"whatsapp": {"paid": {"en": {Name: "n", Language: "en", Params: []string{""}}}}},
			"templates.whatsapp.paid.en.params[0]: must not be empty"},
		{"whatsapp text unused", TemplateConfig{"whatsapp": {"paid": {"en": {Name: "n", Language: "en", Text: "t"}}}},
			"templates.whatsapp.paid.en.text: not used by whatsapp templates"},
		{"bad function", TemplateConfig{"sms": {"paid": {"en": {Text: "{{nosuchfunc .OrderNo}}"}}}},
			"templates.sms.paid.en.text: template: text:1:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tpl, err := ParseTemplates(tt.cfg)
			if err == nil {
				t.Fatalf("ParseTemplates succeeded: %+v", tpl)
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("error %q\nwant prefix %q", err, tt.want)
			}
		})
	}
}

func TestParseTemplatesReportsEveryError(t *testing.T) {
	cfg := MergeTemplates(DefaultTemplates(), TemplateConfig{
		"sms":   {"paid": {"en": {Text: "{{.X}}"}}},
		"email": {"failed": {"ar": {Subject: "s"}}},
	})
	_, err := ParseTemplates(cfg)
	if err == nil {
		t.Fatal("no error")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "templates.email.failed.ar.text:") || !strings.HasPrefix(lines[1], "templates.sms.paid.en.text:") {
		t.Errorf("errors not one per key in key order: %q", lines)
	}
}

func TestMergeTemplatesOverridesCells(t *testing.T) {
	base := DefaultTemplates()
	merged := MergeTemplates(base, TemplateConfig{"sms": {"paid": {"ar": {Text: "مخصص {{.OrderNo}}"}}}})
	tpl, err := ParseTemplates(merged)
	if err != nil {
		t.Fatal(err)
	}
	r, _, _ := tpl.Render(schemas.ChannelSMS, schemas.StatePaid, schemas.LanguageAR, sampleData)
	if r.Text != "مخصص ORD-1001" {
		t.Errorf("override not used: %q", r.Text)
	}
	r, _, _ = tpl.Render(schemas.ChannelSMS, schemas.StatePaid, schemas.LanguageEN, sampleData)
	if !strings.Contains(r.Text, "received") {
		t.Errorf("default en lost: %q", r.Text)
	}
	if base["sms"]["paid"]["ar"].Text == "مخصص {{.OrderNo}}" {
		t.Error("MergeTemplates changed its input")
	}
}

func TestRenderEscapesHTMLAndSanitisesSubject(t *testing.T) {
	tpl := defaultTemplates(t)
	data := sampleData
	data.CustomerFirstName = `<script>alert("x")</script>`
	data.OrderNo = "A&B\r\nBcc: evil@example.com"
	r, ok, err := tpl.Render(schemas.ChannelEmail, schemas.StatePaid, schemas.LanguageEN, data)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if strings.Contains(r.HTML, "<script>") || !strings.Contains(r.HTML, "&lt;script&gt;") || !strings.Contains(r.HTML, "A&amp;B") {
		t.Errorf("HTML not escaped: %s", r.HTML)
	}
	if !strings.Contains(r.Text, `<script>alert("x")</script>`) {
		t.Errorf("text should be verbatim: %s", r.Text)
	}
	if strings.ContainsAny(r.Subject, "\r\n") || r.Subject != "Payment received for order A&B Bcc: evil@example.com" {
		t.Errorf("subject not one line: %q", r.Subject)
	}
}

// TestTemplateTooLongForItsChannel: a template whose sample rendering is
// already over its channel's limit is a configuration error, named by its
// key, not a message_too_long for every customer.
func TestTemplateTooLongForItsChannel(t *testing.T) {
	for _, tc := range []struct {
		cfg  TemplateConfig
		want string
	}{
		{TemplateConfig{"sms": {"paid": {"ar": {Text: strings.Repeat("ش", MaxSMSCharacters+1)}}}}, "templates.sms.paid.ar: with a sample transaction, the rendered sms text is 1601 characters"},
		{TemplateConfig{"email": {"paid": {"en": {Subject: strings.Repeat("s", 990) + " {{.OrderNo}}", Text: "x"}}}}, "templates.email.paid.en: with a sample transaction, the rendered email subject is 999 characters"},
	} {
		if _, err := ParseTemplates(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseTemplates = %v, want %q", err, tc.want)
		}
	}
	if _, err := ParseTemplates(TemplateConfig{"sms": {"paid": {"en": {Text: strings.Repeat("x", MaxSMSCharacters)}}}}); err != nil {
		t.Errorf("an SMS template of exactly %d characters: %v", MaxSMSCharacters, err)
	}
}
