package dispatch

import (
	"strings"

	"github.com/notifyd/notifyd/schemas"
)

// defaultText holds one language's built-in wording.
type defaultText struct {
	lang, waLang, dir     string
	greeting, ref, amount string
	waName, waAmount      string
	subjects, sentences   map[schemas.State]string
}

// In the wording below "{ref}" stands for the order reference and "{amt}"
// for the optional amount phrase; both are template snippets.
var defaultTexts = []defaultText{
	{
		lang: "en", waLang: "en_US", dir: "ltr",
		greeting: `Dear {{or .CustomerFirstName "customer"}},`,
		ref:      `{{if .OrderNo}}order {{.OrderNo}}{{else}}your order{{end}}`,
		amount:   `{{if .Amount}} of {{.Amount}}{{with .CurrencyCode}} {{.}}{{end}}{{end}}`,
		waName:   `{{or .CustomerFirstName "customer"}}`,
		waAmount: `{{if .Amount}}{{.Amount}}{{with .CurrencyCode}} {{.}}{{end}}{{else}}-{{end}}`,
		subjects: map[schemas.State]string{
			schemas.StateCreated:    "Payment created for {ref}",
			schemas.StatePaid:       "Payment received for {ref}",
			schemas.StateCanceled:   "Payment canceled for {ref}",
			schemas.StateFailed:     "Payment failed for {ref}",
			schemas.StateExpired:    "Payment expired for {ref}",
			schemas.StateAuthorized: "Payment authorized for {ref}",
			schemas.StateVoided:     "Payment voided for {ref}",
			schemas.StateRefunded:   "Payment refunded for {ref}",
			schemas.StateCaptured:   "Payment captured for {ref}",
		},
		sentences: map[schemas.State]string{
			schemas.StateCreated:    "A payment{amt} for {ref} has been created.",
			schemas.StatePaid:       "We have received your payment{amt} for {ref}. Thank you.",
			schemas.StateCanceled:   "Your payment{amt} for {ref} has been canceled.",
			schemas.StateFailed:     "Your payment{amt} for {ref} could not be completed. Please try again.",
			schemas.StateExpired:    "The payment{amt} for {ref} has expired.",
			schemas.StateAuthorized: "Your payment{amt} for {ref} has been authorized.",
			schemas.StateVoided:     "The authorized payment{amt} for {ref} has been voided.",
			schemas.StateRefunded:   "Your payment{amt} for {ref} has been refunded.",
			schemas.StateCaptured:   "Your payment{amt} for {ref} has been captured.",
		},
	},
	{
		lang: "ar", waLang: "ar", dir: "rtl",
		greeting: `عزيزي {{or .CustomerFirstName "العميل"}}،`,
		ref:      `{{if .OrderNo}}الطلب رقم {{.OrderNo}}{{else}}طلبك{{end}}`,
		amount:   `{{if .Amount}} بمبلغ {{.Amount}}{{with .CurrencyCode}} {{.}}{{end}}{{end}}`,
		waName:   `{{or .CustomerFirstName "العميل"}}`,
		waAmount: `{{if .Amount}}{{.Amount}}{{with .CurrencyCode}} {{.}}{{end}}{{else}}-{{end}}`,
		subjects: map[schemas.State]string{
			schemas.StateCreated:    "تم إنشاء عملية الدفع - {ref}",
			schemas.StatePaid:       "تم استلام الدفعة - {ref}",
			schemas.StateCanceled:   "تم إلغاء الدفعة - {ref}",
			schemas.StateFailed:     "تعذّر إتمام الدفعة - {ref}",
			schemas.StateExpired:    "انتهت صلاحية الدفعة - {ref}",
			schemas.StateAuthorized: "تم تفويض الدفعة - {ref}",
			schemas.StateVoided:     "تم إبطال الدفعة - {ref}",
			schemas.StateRefunded:   "تم استرداد الدفعة - {ref}",
			schemas.StateCaptured:   "تم تحصيل الدفعة - {ref}",
		},
		sentences: map[schemas.State]string{
			schemas.StateCreated:    "تم إنشاء عملية دفع{amt} بخصوص {ref}.",
			schemas.StatePaid:       "تم استلام دفعتك{amt} بخصوص {ref}. شكراً لك.",
			schemas.StateCanceled:   "تم إلغاء دفعتك{amt} بخصوص {ref}.",
			schemas.StateFailed:     "تعذّر إتمام دفعتك{amt} بخصوص {ref}. يرجى المحاولة مرة أخرى.",
			schemas.StateExpired:    "انتهت صلاحية عملية الدفع{amt} بخصوص {ref}.",
			schemas.StateAuthorized: "تم تفويض دفعتك{amt} بخصوص {ref}.",
			schemas.StateVoided:     "تم إبطال الدفعة المفوّضة{amt} بخصوص {ref}.",
			schemas.StateRefunded:   "تم استرداد دفعتك{amt} بخصوص {ref}.",
			schemas.StateCaptured:   "تم تحصيل دفعتك{amt} بخصوص {ref}.",
		},
	},
}

// DefaultTemplates returns the built-in templates: an en and an ar template
// (Arabic wording) for every channel and state of the channel matrix. The
// whatsapp templates name pre-approved Meta templates "payment_<state>"
// (language en_US or ar) with three body parameters: the customer's first
// name, the order reference and the amount. Each call returns a new map that
// the caller may change.
func DefaultTemplates() TemplateConfig {
	cfg := TemplateConfig{}
	for _, ch := range schemas.Channels {
		cfg[string(ch)] = map[string]map[string]Template{}
		for _, st := range SupportedStates(ch) {
			langs := map[string]Template{}
			for _, d := range defaultTexts {
				fill := func(s string) string {
					return strings.NewReplacer("{ref}", d.ref, "{amt}", d.amount).Replace(s)
				}
				subject, sentence := fill(d.subjects[st]), fill(d.sentences[st])
				var t Template
				switch ch {
				case schemas.ChannelEmail:
					t = Template{
						Subject: subject,
						Text:    d.greeting + "\n\n" + sentence + "\n",
						HTML: `<!DOCTYPE html><html lang="` + d.lang + `" dir="` + d.dir + `"><body>` +
							`<p>` + d.greeting + `</p><p>` + sentence + `</p></body></html>`,
					}
				case schemas.ChannelSMS:
					t = Template{Text: sentence}
				case schemas.ChannelWhatsApp:
					t = Template{
						Name:     "payment_" + string(st),
						Language: d.waLang,
						Params:   []string{d.waName, `{{or .OrderNo .SessionID}}`, d.waAmount},
					}
				}
				langs[d.lang] = t
			}
			cfg[string(ch)][string(st)] = langs
		}
	}
	return cfg
}
