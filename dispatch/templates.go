package dispatch

import (
	"bytes"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"maps"
	"slices"
	"strings"
	"text/template"

	"github.com/notifyd/notifyd/schemas"
)

// Template is the configuration of one message template, for one channel,
// state and language. Which fields apply depends on the channel: email uses
// Subject, Text and HTML; sms uses Text; whatsapp uses Name, Language and
// Params. Subject, Text and each of Params are text/template templates, HTML
// is an html/template template (values are escaped); all execute on a
// TemplateData.
type Template struct {
	// Subject is the email subject (email only). Line breaks in the
	// rendered subject are replaced by spaces.
	Subject string `yaml:"subject,omitempty" json:"subject,omitempty"`
	// Text is the plain-text body (email and sms).
	Text string `yaml:"text,omitempty" json:"text,omitempty"`
	// HTML is the HTML body (email only), rendered with html/template.
	HTML string `yaml:"html,omitempty" json:"html,omitempty"`
	// Name is the pre-approved Meta template name (whatsapp only).
	Name string `yaml:"name,omitempty" json:"name,omitempty"`
	// Language is the Meta template language code, e.g. en_US or ar
	// (whatsapp only).
	Language string `yaml:"language,omitempty" json:"language,omitempty"`
	// Params are the whatsapp template's body parameters, in order, each a
	// text/template (whatsapp only).
	Params []string `yaml:"params,omitempty" json:"params,omitempty"`
}

// TemplateConfig is templates.<channel>.<state>.<language> as written in the
// config file. Keys are plain strings so that errors can name bad keys.
type TemplateConfig map[string]map[string]map[string]Template

// MergeTemplates returns a new TemplateConfig holding every template of base
// with those of over replacing the same <channel>.<state>.<language> cells.
// Use it to override some of DefaultTemplates.
func MergeTemplates(base, over TemplateConfig) TemplateConfig {
	out := TemplateConfig{}
	for _, cfg := range []TemplateConfig{base, over} {
		for ch, states := range cfg {
			if out[ch] == nil {
				out[ch] = map[string]map[string]Template{}
			}
			for st, langs := range states {
				if out[ch][st] == nil {
					out[ch][st] = map[string]Template{}
				}
				maps.Copy(out[ch][st], langs)
			}
		}
	}
	return out
}

// TemplateData is what templates execute on. Every field is text; an
// absent value is "".
type TemplateData struct {
	SessionID         string
	OrderNo           string
	State             string
	Amount            string
	CurrencyCode      string
	CustomerFirstName string
	CustomerLastName  string
	Language          string
}

// dataFor builds the template data of a transaction.
func dataFor(txn *schemas.PaymentEvent) TemplateData {
	lang := txn.Language
	if lang != schemas.LanguageAR {
		lang = schemas.LanguageEN
	}
	return TemplateData{
		SessionID:         txn.SessionID,
		OrderNo:           txn.OrderNo,
		State:             string(txn.State),
		Amount:            txn.AmountString(),
		CurrencyCode:      txn.CurrencyCode,
		CustomerFirstName: txn.CustomerFirstName,
		CustomerLastName:  txn.CustomerLastName,
		Language:          string(lang),
	}
}

// sampleData is what ParseTemplates test-renders every template with.
var sampleData = TemplateData{
	SessionID:         "sess_sample",
	OrderNo:           "ORD-1001",
	State:             string(schemas.StatePaid),
	Amount:            "12.500",
	CurrencyCode:      "KWD",
	CustomerFirstName: "Lina",
	CustomerLastName:  "Haddad",
	Language:          string(schemas.LanguageEN),
}

// Rendered is a template rendered for one transaction. Email fills Subject
// and Text and/or HTML; sms fills Text; whatsapp fills WhatsApp.
type Rendered struct {
	Subject  string
	Text     string
	HTML     string
	WhatsApp *WhatsAppTemplate
}

// WhatsAppTemplate is a rendered whatsapp template message: the Meta template
// name and language code and its body parameters.
type WhatsAppTemplate struct {
	Name     string
	Language string
	Params   []string
}

// Templates is a parsed, validated TemplateConfig, ready to render. It is
// safe for concurrent use. The zero value and nil have no templates.
type Templates struct {
	cells map[cellKey]*parsedTemplate
}

// Over returns the templates of t with those of own in their cells: what a
// merchant's decisions render (parsed templates are shared, never
// changed).
func (t *Templates) Over(own *Templates) *Templates {
	out := &Templates{cells: maps.Clone(t.cells)}
	maps.Copy(out.cells, own.cells)
	return out
}

type cellKey struct {
	ch   schemas.Channel
	st   schemas.State
	lang schemas.Language
}

type parsedTemplate struct {
	subject  *template.Template
	text     *template.Template
	html     *htmltemplate.Template
	name     string
	language string
	params   []*template.Template
}

// ParseTemplates validates and parses cfg. Channel keys must be email, sms or
// whatsapp; state keys a known state that the channel supports; language
// keys en or ar. Every template is parsed (text/template, email html with
// html/template, both with missingkey=error), the fields each channel needs
// must be present (email: subject and text or html; sms: text; whatsapp: name
// and language), fields the channel does not use must be empty, and every
// template is test-rendered with sample data. Errors, joined and in key
// order, each name the key: "templates.<channel>.<state>.<language>[.<field>]: ...".
func ParseTemplates(cfg TemplateConfig) (*Templates, error) {
	t := &Templates{cells: map[cellKey]*parsedTemplate{}}
	var errs []error
	for _, chName := range slices.Sorted(maps.Keys(cfg)) {
		chKey := "templates." + chName
		ch := schemas.Channel(chName)
		if !ch.Valid() {
			errs = append(errs, fmt.Errorf("%s: unknown channel (want email, sms or whatsapp)", chKey))
			continue
		}
		states := cfg[chName]
		for _, stName := range slices.Sorted(maps.Keys(states)) {
			stKey := chKey + "." + stName
			st := schemas.State(stName)
			if !st.Valid() {
				errs = append(errs, fmt.Errorf("%s: unknown state", stKey))
				continue
			}
			if !Supports(ch, st) {
				errs = append(errs, fmt.Errorf("%s: %s does not support state %s", stKey, ch, st))
				continue
			}
			langs := states[stName]
			for _, langName := range slices.Sorted(maps.Keys(langs)) {
				key := stKey + "." + langName
				lang := schemas.Language(langName)
				if lang != schemas.LanguageEN && lang != schemas.LanguageAR {
					errs = append(errs, fmt.Errorf("%s: unknown language (want en or ar)", key))
					continue
				}
				p, err := parseTemplate(key, ch, langs[langName])
				if err != nil {
					errs = append(errs, err)
					continue
				}
				t.cells[cellKey{ch, st, lang}] = p
				// A template too long for its channel with the sample
				// transaction would be message_too_long for every customer.
				if r, _, err := t.Render(ch, st, lang, sampleData); err == nil {
					if detail := tooLong(ch, r); detail != "" {
						errs = append(errs, fmt.Errorf("%s: with a sample transaction, %s", key, detail))
					}
				}
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return t, nil
}

func parseTemplate(key string, ch schemas.Channel, tpl Template) (*parsedTemplate, error) {
	var errs []error
	fail := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", key, field, fmt.Sprintf(format, args...)))
	}
	unused := func(field, v string) {
		if v != "" {
			fail(field, "not used by %s templates", ch)
		}
	}
	required := func(field, v string) {
		if strings.TrimSpace(v) == "" {
			fail(field, "is required")
		}
	}
	parseText := func(field, src string) *template.Template {
		if src == "" {
			return nil
		}
		tt, err := template.New(field).Option("missingkey=error").Parse(src)
		if err != nil {
			fail(field, "%v", err)
			return nil
		}
		if err := tt.Execute(&bytes.Buffer{}, sampleData); err != nil {
			fail(field, "%v", err)
			return nil
		}
		return tt
	}

	p := &parsedTemplate{}
	switch ch {
	case schemas.ChannelEmail:
		required("subject", tpl.Subject)
		if strings.TrimSpace(tpl.Text) == "" && strings.TrimSpace(tpl.HTML) == "" {
			fail("text", "text or html is required")
		}
		unused("name", tpl.Name)
		unused("language", tpl.Language)
		if len(tpl.Params) > 0 {
			fail("params", "not used by %s templates", ch)
		}
		p.subject = parseText("subject", tpl.Subject)
		p.text = parseText("text", tpl.Text)
		if tpl.HTML != "" {
			ht, err := htmltemplate.New("html").Option("missingkey=error").Parse(tpl.HTML)
			if err != nil {
				fail("html", "%v", err)
			} else if err := ht.Execute(&bytes.Buffer{}, sampleData); err != nil {
				fail("html", "%v", err)
			} else {
				p.html = ht
			}
		}
	case schemas.ChannelSMS:
		required("text", tpl.Text)
		unused("subject", tpl.Subject)
		unused("html", tpl.HTML)
		unused("name", tpl.Name)
		unused("language", tpl.Language)
		if len(tpl.Params) > 0 {
			fail("params", "not used by %s templates", ch)
		}
		p.text = parseText("text", tpl.Text)
	case schemas.ChannelWhatsApp:
		required("name", tpl.Name)
		required("language", tpl.Language)
		unused("subject", tpl.Subject)
		unused("text", tpl.Text)
		unused("html", tpl.HTML)
		p.name = strings.TrimSpace(tpl.Name)
		p.language = strings.TrimSpace(tpl.Language)
		for i, src := range tpl.Params {
			field := fmt.Sprintf("params[%d]", i)
			if strings.TrimSpace(src) == "" {
				fail(field, "must not be empty")
				continue
			}
			p.params = append(p.params, parseText(field, src))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return p, nil
}

// Has reports whether a template exists for ch and st in lang or, failing
// that, in en.
func (t *Templates) Has(ch schemas.Channel, st schemas.State, lang schemas.Language) bool {
	return t.lookup(ch, st, lang) != nil
}

func (t *Templates) lookup(ch schemas.Channel, st schemas.State, lang schemas.Language) *parsedTemplate {
	if t == nil {
		return nil
	}
	if p := t.cells[cellKey{ch, st, lang}]; p != nil {
		return p
	}
	return t.cells[cellKey{ch, st, schemas.LanguageEN}]
}

// Render renders the template for channel ch and state st in language lang,
// falling back to the en template when there is none in lang. ok is false
// when neither exists; err reports a template that failed to execute.
func (t *Templates) Render(ch schemas.Channel, st schemas.State, lang schemas.Language, data TemplateData) (r Rendered, ok bool, err error) {
	p := t.lookup(ch, st, lang)
	if p == nil {
		return Rendered{}, false, nil
	}
	exec := func(tt *template.Template) (string, error) {
		if tt == nil {
			return "", nil
		}
		var b strings.Builder
		if err := tt.Execute(&b, data); err != nil {
			return "", err
		}
		return b.String(), nil
	}
	if r.Subject, err = exec(p.subject); err != nil {
		return Rendered{}, true, err
	}
	r.Subject = strings.Join(strings.Fields(r.Subject), " ")
	if r.Text, err = exec(p.text); err != nil {
		return Rendered{}, true, err
	}
	if p.html != nil {
		var b strings.Builder
		if err := p.html.Execute(&b, data); err != nil {
			return Rendered{}, true, err
		}
		r.HTML = b.String()
	}
	if ch == schemas.ChannelWhatsApp {
		wa := &WhatsAppTemplate{Name: p.name, Language: p.language, Params: make([]string, 0, len(p.params))}
		for _, pt := range p.params {
			s, err := exec(pt)
			if err != nil {
				return Rendered{}, true, err
			}
			wa.Params = append(wa.Params, s)
		}
		r.WhatsApp = wa
	}
	return r, true, nil
}
