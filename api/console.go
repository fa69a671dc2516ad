package api

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/notifyd/notifyd/dispatch"
	"github.com/notifyd/notifyd/projection"
	"github.com/notifyd/notifyd/schemas"
)

// ConsoleBackend is what the operator console reads besides Commands and
// Results: the projection, its history index and the dispatcher's checks
// of the instance (consumer.Service implements it; cmd wires it).
type ConsoleBackend interface {
	// Lookup returns the current snapshot of the transaction sessionID
	// names, or, with sessionID empty, the one orderNo names within
	// merchantID ("" is the default merchant's). A merchantID given
	// limits the answer to that merchant's transactions.
	Lookup(merchantID, sessionID, orderNo string) (schemas.PaymentEvent, bool, error)
	// Check is what a resend of each channel of txn would be answered
	// before any provider call, by the code that decides commands.
	Check(txn schemas.PaymentEvent) ([]dispatch.ChannelCheck, error)
	// History returns the delivery results of a transaction as
	// published, newest first, at most limit (0: all).
	History(sessionID string, limit int) ([][]byte, error)
	// Attention lists the channels that need attention.
	Attention(f projection.AttentionFilter) ([]projection.AttentionItem, string, error)
	// Delivery returns the furthest delivery status of a provider
	// message, from the providers' receipts.
	Delivery(providerMessageID string) (schemas.DeliveryEvent, bool, error)
	// Counts returns the per-merchant counts of channel results.
	Counts(f projection.CountsFilter) ([]projection.ChannelCounts, string, error)
	// Recent returns the transactions with the latest payment events,
	// newest first, and the cursor of the next page ("" for none).
	Recent(f projection.RecentFilter) ([]schemas.PaymentEvent, string, error)
	// FindPrefix returns the transactions whose session_id or order_no
	// starts with a prefix; more says more may match.
	FindPrefix(f projection.PrefixFilter) ([]schemas.PaymentEvent, bool, error)
}

// consolePrefix is where the console is served.
const consolePrefix = "/console/"

// Limits of the console's pages.
const (
	historyRows     = 50
	recentRows      = 20 // transactions on the find page, recent or matching a prefix
	attentionRows   = 50
	attentionTotal  = 10_000 // needs-attention entries counted for the list's total
	recoverySample  = 20
	maxRecovery     = 100_000
	resendWait      = 10 * time.Second
	pendingRefresh  = 2  // seconds, the short poll of a result not in yet
	maxPolls        = 60 // polls of a result before the page stops reloading
	recoveryWorkers = 8
	maxBatches      = 32 // recoveries remembered for their progress pages
)

//go:embed console
var consoleFiles embed.FS

// console is the operator console: server-rendered pages, no JavaScript,
// no asset from elsewhere.
type console struct {
	s        *Server
	backend  ConsoleBackend
	sessions *sessions
	pages    map[string]*template.Template
	static   http.Handler
	log      *slog.Logger
	// recoveries publishes the bulk recoveries confirmed here.
	recoveries *recoveries
}

func newConsole(s *Server, backend ConsoleBackend) (*console, error) {
	c := &console{
		s: s, backend: backend, log: s.log.With("component", "console"),
		recoveries: newRecoveries(s.deps.Commands, s.log.With("component", "console")),
		sessions: &sessions{key: []byte(s.cfg.Console.SessionKey), ttl: s.cfg.Console.SessionTTL,
			// Behind a TLS-terminating proxy (allow_insecure) the browser
			// speaks HTTPS too.
			secure: s.cfg.TLS.Enabled() || s.cfg.AllowInsecure, now: time.Now},
		pages: map[string]*template.Template{},
	}
	if len(c.sessions.key) < MinSessionKeyLength {
		return nil, fmt.Errorf("api.console.session_key: at least %d characters", MinSessionKeyLength)
	}
	funcs := template.FuncMap{
		"when":  func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
		"stamp": stampOf,
		// merchant names an entry's merchant: one from before merchants is the default's.
		"merchant": schemas.MerchantOf,
		// iso is a time for <time datetime>, which the console's script
		// shows in the browser's zone beside the UTC text.
		"iso": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
		// short shortens a long id (the whole one is the title and the
		// copy button's).
		"short": func(id string) string {
			if r := []rune(id); len(r) > 14 {
				return string(r[:10]) + "…"
			}
			return id
		},
		// outcome is an outcome in words.
		"outcome": func(o schemas.Outcome) string { return strings.ReplaceAll(string(o), "_", " ") },
		"plural":  plural,
	}
	for _, page := range []string{"login", "home", "txn", "attention", "recover", "batch", "counts"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(consoleFiles, "console/layout.html", "console/"+page+".html")
		if err != nil {
			return nil, fmt.Errorf("console: %w", err)
		}
		c.pages[page] = t
	}
	static, _ := fs.Sub(consoleFiles, "console/static")
	c.static = http.StripPrefix(consolePrefix+"static/", http.FileServer(http.FS(static)))
	return c, nil
}

// routes adds the console's pages to the API's table. Every page is
// served with securityHeaders, and every state-changing request is checked
// by http.CrossOriginProtection (cross-origin ones, by Sec-Fetch-Site,
// else Origin against Host, are refused with 403) and formsOnly.
func (c *console) routes(mux *http.ServeMux) {
	cop := http.NewCrossOriginProtection()
	page := func(pattern string, h http.HandlerFunc) {
		mux.Handle(pattern, securityHeaders(cop.Handler(formsOnly(h))))
	}
	page("GET /console/{$}", c.signedIn(c.home))
	page("GET /console/login", c.loginPage)
	page("POST /console/login", c.login)
	page("POST /console/logout", c.logout)
	page("GET /console/txn", c.signedIn(c.txn))
	page("POST /console/resend", c.signedIn(c.operator(c.limited(c.resend))))
	page("GET /console/attention", c.signedIn(c.attention))
	page("POST /console/recover", c.signedIn(c.operator(c.limited(c.recover))))
	page("GET /console/recover/{batch}", c.signedIn(c.batchPage))
	page("GET /console/counts", c.signedIn(c.counts))
	page("GET /console/static/", c.static.ServeHTTP)
	page("/console/", http.NotFound) // another page, or another method
	mux.HandleFunc("/console", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, consolePrefix, http.StatusMovedPermanently)
	})
}

// securityHeaders: no framing, no script but the console's own (copy
// buttons, local times: every page works without it), nothing from
// elsewhere, no caching of pages holding customer data.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		if !strings.HasPrefix(r.URL.Path, consolePrefix+"static/") {
			h.Set("Cache-Control", "no-store")
		}
		next.ServeHTTP(w, r)
	})
}

// viewer is who is signed in.
type viewer struct {
	Name     string
	Operator bool
	// Merchant is the user's merchant: the console shows that merchant's
	// transactions, results and needs-attention entries only. "" is a
	// platform user, who sees every merchant's (with a merchant column
	// and filter).
	Merchant string
}

// reaches reports whether the viewer may see data of merchantID.
func (v viewer) reaches(merchantID string) bool {
	return Principal{Merchant: v.Merchant}.Reaches(merchantID)
}

type consoleHandler func(w http.ResponseWriter, r *http.Request, v viewer)

// signedIn runs h for a signed-in user: a session cookie signed with the
// key, not expired, of a user of api.users with the same password and
// role, opened after the user's sessions last ended (SignOuts; an
// instance that cannot tell answers 503). Others are sent to the sign-in
// page (GET) or refused (POST), their stale cookie cleared.
func (c *console) signedIn(h consoleHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sess, err := c.sessions.session(r)
		u, known := c.s.auth.user(sess.user)
		if err == nil && known && sess.fingerprint == fingerprint(u) {
			ended, err := c.s.deps.SignOuts.SessionsEnded(u.Username)
			if err != nil {
				c.unavailable(w, viewer{}, err)
				return
			}
			if sess.issued.After(ended) {
				note(r, "user", u.Username)
				h(w, r, viewer{Name: u.Username, Operator: u.Role.MaySend(), Merchant: u.Merchant})
				return
			}
		}
		if err == nil { // a session, but over: the browser forgets it
			http.SetCookie(w, c.sessions.clear())
		}
		if r.Method == http.MethodGet {
			http.Redirect(w, r, consolePrefix+"login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		http.Error(w, "Sign in first.", http.StatusUnauthorized)
	}
}

// operator refuses (403) viewers.
func (c *console) operator(h consoleHandler) consoleHandler {
	return func(w http.ResponseWriter, r *http.Request, v viewer) {
		if !v.Operator {
			c.render(w, http.StatusForbidden, "home", v, map[string]any{"Error": "Your role (viewer) may look, not resend."})
			return
		}
		h(w, r, v)
	}
}

// limited answers 429 (with Retry-After) a user over api.rate_limit: the
// same bucket as the user's API requests, so the console is no way around
// it.
func (c *console) limited(h consoleHandler) consoleHandler {
	return func(w http.ResponseWriter, r *http.Request, v viewer) {
		if wait, ok := c.s.allow(Principal{Name: v.Name, Merchant: v.Merchant}); !ok {
			secs := retryAfterSeconds(wait)
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			c.render(w, http.StatusTooManyRequests, "home", v, map[string]any{
				"Error": fmt.Sprintf("Too many requests: try again in %d second%s.", secs, plural(secs))})
			return
		}
		h(w, r, v)
	}
}

// render executes a page in the layout.
func (c *console) render(w http.ResponseWriter, status int, page string, v viewer, data map[string]any) {
	if data == nil {
		data = map[string]any{}
	}
	data["Viewer"] = v
	data["Page"] = page
	var b strings.Builder
	if err := c.pages[page].Execute(&b, data); err != nil {
		c.log.Error("console: render", "page", page, "error", err)
		http.Error(w, "Internal error.", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(b.String()))
}

// home is the find page: the search form and the transactions with the
// latest payment events (the viewer's merchant's; a platform user's of the
// merchant named by ?merchant=, the default merchant's without), a page at
// a time.
func (c *console) home(w http.ResponseWriter, r *http.Request, v viewer) {
	q := r.URL.Query()
	merchant := v.Merchant
	data := map[string]any{}
	if merchant == "" {
		merchant = schemas.MerchantDefault
	}
	if v.Merchant == "" && q.Get("merchant") != "" {
		if !schemas.ValidMerchantID(q.Get("merchant")) {
			c.render(w, http.StatusBadRequest, "home", v, map[string]any{"Error": "A merchant_id is 1 to 64 of A-Z, a-z, 0-9, '.', '_' and '-'."})
			return
		}
		merchant = q.Get("merchant")
		data["Merchant"] = merchant
	}
	txns, next, err := c.backend.Recent(projection.RecentFilter{MerchantID: merchant, After: q.Get("after"), Limit: recentRows})
	if err != nil {
		if q.Get("after") != "" {
			c.render(w, http.StatusBadRequest, "home", v, map[string]any{"Error": "That page of recent transactions does not exist: start from the first."})
			return
		}
		c.unavailable(w, v, err)
		return
	}
	data["Rows"], data["Listed"] = txnRows(txns), merchant
	if next != "" {
		u := url.Values{"after": {next}}
		if v.Merchant == "" && merchant != schemas.MerchantDefault {
			u.Set("merchant", merchant)
		}
		data["Next"] = consolePrefix + "?" + u.Encode()
	}
	if q.Get("after") != "" {
		data["Paged"] = true
	}
	c.render(w, http.StatusOK, "home", v, data)
}

// txnRow is a transaction in a list of the find page.
type txnRow struct {
	SessionID, OrderNo, MerchantID, State, Customer, Email, Phone string
	At                                                            time.Time
}

func txnRows(txns []schemas.PaymentEvent) []txnRow {
	rows := make([]txnRow, len(txns))
	for i, t := range txns {
		rows[i] = txnRow{SessionID: t.SessionID, OrderNo: t.OrderNo, MerchantID: t.MerchantID, State: string(t.State),
			Customer: strings.TrimSpace(t.CustomerFirstName + " " + t.CustomerLastName),
			Email:    dispatch.MaskRecipient(schemas.ChannelEmail, t.CustomerEmail),
			Phone:    dispatch.MaskRecipient(schemas.ChannelSMS, t.CustomerPhone), At: t.TimestampUTC}
	}
	return rows
}

// txnView is a transaction as the console shows it: contacts masked as in
// results.
type txnView struct {
	SessionID, OrderNo, MerchantID, State, Amount, Currency, Language, Email, Phone, Name string
	Version                                                                               int64
}

// txn shows a transaction found by session_id or order_no: its state,
// contacts (masked), the channel grid, its history, the resend form, and
// the result of a resend when asked (?result=<command_id>).
func (c *console) txn(w http.ResponseWriter, r *http.Request, v viewer) {
	q := r.URL.Query()
	by, id := "session_id", strings.TrimSpace(q.Get("session_id"))
	if id == "" {
		by, id = "order_no", strings.TrimSpace(q.Get("order_no"))
	}
	if q.Get("q") != "" { // the search form: one field, and which identifier
		id = strings.TrimSpace(q.Get("q"))
		by = "session_id"
		if q.Get("by") == "order_no" {
			by = "order_no"
		}
	}
	data := map[string]any{"By": by, "ID": id}
	if id == "" {
		c.render(w, http.StatusBadRequest, "home", v, map[string]any{"Error": "Enter a session_id or an order_no."})
		return
	}
	sessionID, orderNo := id, ""
	if by == "order_no" {
		sessionID, orderNo = "", id
	}
	merchant := v.Merchant
	if merchant == "" && schemas.ValidMerchantID(q.Get("merchant")) {
		merchant = q.Get("merchant") // a platform user names the merchant of an order_no
	}
	data["Merchant"] = merchant
	txn, found, err := c.backend.Lookup(merchant, sessionID, orderNo)
	if err != nil {
		c.unavailable(w, v, err)
		return
	}
	if !found {
		// A deleted (tombstoned) transaction keeps its history (for a
		// merchant's user, its own results only).
		if by == "session_id" {
			if hist, deliveries, _, err := c.history(v, id, 0); err == nil && len(hist) > 0 {
				data["History"], data["Deliveries"] = hist, deliveries
				data["Deleted"] = true
				c.render(w, http.StatusNotFound, "txn", v, data)
				return
			}
		}
		// Not an identifier: the start of some? (Within the viewer's
		// merchant, so another merchant's are not told apart from none.)
		matches, more, err := c.backend.FindPrefix(projection.PrefixFilter{MerchantID: merchant, Prefix: id, OrderNo: by == "order_no", Limit: recentRows})
		if err != nil {
			c.unavailable(w, v, err)
			return
		}
		if len(matches) > 0 {
			c.render(w, http.StatusOK, "home", v, map[string]any{"Rows": txnRows(matches), "Prefix": id, "By": by, "More": more, "Merchant": data["Merchant"]})
			return
		}
		c.render(w, http.StatusNotFound, "txn", v, data)
		return
	}
	checks, err := c.backend.Check(txn)
	if err != nil {
		c.unavailable(w, v, err)
		return
	}
	page, _ := strconv.Atoi(q.Get("history_page"))
	page = max(page, 0)
	hist, deliveries, more, err := c.history(v, txn.SessionID, page)
	if err != nil {
		c.unavailable(w, v, err)
		return
	}
	pageURL := func(n int) string {
		u := url.Values{"session_id": {txn.SessionID}}
		if n > 0 {
			u.Set("history_page", strconv.Itoa(n))
		}
		return consolePrefix + "txn?" + u.Encode()
	}
	if more {
		data["Older"] = pageURL(page + 1)
	}
	if page > 0 {
		data["Newer"] = pageURL(page - 1)
	}
	data["Txn"] = txnView{
		SessionID: txn.SessionID, OrderNo: txn.OrderNo, MerchantID: txn.MerchantID, State: string(txn.State), Amount: txn.AmountString(), Currency: txn.CurrencyCode,
		Language: string(txn.Language), Email: dispatch.MaskRecipient(schemas.ChannelEmail, txn.CustomerEmail),
		Phone: dispatch.MaskRecipient(schemas.ChannelSMS, txn.CustomerPhone), Name: strings.TrimSpace(txn.CustomerFirstName + " " + txn.CustomerLastName),
		Version: txn.Version,
	}
	data["Grid"] = checks
	data["History"], data["Deliveries"] = hist, deliveries
	// The resend form carries its command_id: submitting it twice (a
	// double click, a reload) publishes one command, decided once.
	if token, err := uuid.NewV7(); err == nil {
		data["CommandID"] = token.String()
	}
	if id := q.Get("result"); id != "" {
		if err := c.resendResult(data, v, txn.SessionID, id, q.Get("polls")); err != nil {
			c.unavailable(w, v, err)
			return
		}
	}
	c.render(w, http.StatusOK, "txn", v, data)
}

// resendResult adds to a transaction's page the result of the resend id
// (?result=), or, while it is not in, a short poll of the page (at most
// maxPolls, counted in polls).
func (c *console) resendResult(data map[string]any, v viewer, sessionID, id, polls string) error {
	raw, found, err := c.s.deps.Results.Result(id)
	if err != nil {
		return err
	}
	data["ResultID"] = id
	if found {
		var res schemas.DeliveryResult
		if json.Unmarshal(raw, &res) == nil && v.reaches(res.MerchantID) {
			data["Result"] = res
		}
	} else if n, _ := strconv.Atoi(polls); n < maxPolls {
		data["Refresh"] = pendingRefresh
		data["RefreshURL"] = consolePrefix + "txn?session_id=" + url.QueryEscape(sessionID) + "&result=" + url.QueryEscape(id) + "&polls=" + strconv.Itoa(n+1)
	} else {
		data["GaveUp"] = true
	}
	return nil
}

// history decodes a page of a transaction's results that v may see,
// newest first (page 0: the last historyRows), with the furthest delivery
// status of each message they sent, by provider message id; more says
// older results exist.
func (c *console) history(v viewer, sessionID string, page int) ([]schemas.DeliveryResult, map[string]*schemas.DeliveryEvent, bool, error) {
	raws, err := c.backend.History(sessionID, (page+1)*historyRows+1)
	if err != nil {
		return nil, nil, false, err
	}
	more := len(raws) > (page+1)*historyRows
	raws = raws[min(page*historyRows, len(raws)):min((page+1)*historyRows, len(raws))]
	out := make([]schemas.DeliveryResult, 0, len(raws))
	deliveries := map[string]*schemas.DeliveryEvent{}
	for _, raw := range raws {
		var res schemas.DeliveryResult
		if json.Unmarshal(raw, &res) != nil || !v.reaches(res.MerchantID) {
			continue
		}
		out = append(out, res)
		for _, ch := range res.Channels {
			if ch.ProviderMessageID == "" {
				continue
			}
			ev, ok, err := c.backend.Delivery(ch.ProviderMessageID)
			if err != nil {
				return nil, nil, false, err
			}
			if ok {
				deliveries[ch.ProviderMessageID] = &ev
			}
		}
	}
	return out, deliveries, more, nil
}

func (c *console) unavailable(w http.ResponseWriter, v viewer, err error) {
	c.log.Error("console: store or Kafka unavailable", "error", err)
	c.render(w, http.StatusServiceUnavailable, "home", v, map[string]any{"Error": "notifyd is not ready (starting, or Kafka is unreachable); try again in a moment."})
}

// resend publishes a resend command for the ticked channels, requested by
// console:<user>, waits a little for its result, and shows the transaction
// with it (or with a short poll until it comes).
func (c *console) resend(w http.ResponseWriter, r *http.Request, v viewer) {
	sessionID := r.PostForm.Get("session_id")
	var channels []schemas.Channel
	for _, ch := range r.PostForm["channel"] {
		if c := schemas.Channel(ch); c.Valid() && !slices.Contains(channels, c) {
			channels = append(channels, c)
		}
	}
	back := consolePrefix + "txn?session_id=" + url.QueryEscape(sessionID)
	if sessionID == "" || len(channels) == 0 {
		http.Redirect(w, r, back, http.StatusSeeOther)
		return
	}
	id, err := uuid.Parse(r.PostForm.Get("command_id"))
	if err != nil || id.Version() != 7 {
		http.Error(w, "The form lacks its command_id: reload the transaction's page.", http.StatusBadRequest)
		return
	}
	cmd := schemas.ResendCommand{CommandID: id.String(), SessionID: sessionID, MerchantID: v.Merchant, Channels: channels,
		RequestedBy: "console:" + v.Name, RequestedAt: time.Now().UTC().Format(time.RFC3339Nano)}
	results, cancel := c.s.deps.Results.WatchResult(cmd.CommandID)
	defer cancel()
	if err := c.s.deps.Commands.PublishCommand(r.Context(), cmd, ""); err != nil {
		var invalid *schemas.ValidationError
		if errors.As(err, &invalid) {
			c.render(w, http.StatusBadRequest, "home", v, map[string]any{"Error": "The command was refused: " + invalid.Error() + "."})
			return
		}
		c.unavailable(w, v, err)
		return
	}
	c.log.Info("console: resend", "user", v.Name, "command_id", cmd.CommandID, "session_id", sessionID, "channels", fmt.Sprint(channels))
	timer := time.NewTimer(min(resendWait, c.s.cfg.Wait))
	defer timer.Stop()
	select {
	case <-results:
	case <-timer.C:
	case <-r.Context().Done():
		return
	}
	http.Redirect(w, r, back+"&result="+url.QueryEscape(cmd.CommandID), http.StatusSeeOther)
}

// stampOf writes a filter's time as the datetime-local inputs take it (to
// the second when it has seconds), in UTC.
func stampOf(t time.Time) string {
	switch {
	case t.IsZero():
		return ""
	case t.Second() != 0 || t.Nanosecond() != 0:
		return t.UTC().Format("2006-01-02T15:04:05")
	}
	return t.UTC().Format("2006-01-02T15:04")
}

// fingerprint identifies the password (its bcrypt hash) and the role a
// session was opened with: a session ends when either changes.
func fingerprint(u User) string {
	canon := u.Bcrypt + "\x00" + string(u.Role)
	if u.Merchant != "" {
		canon += "\x00" + u.Merchant // moving a user to another merchant ends its sessions
	}
	sum := sha256.Sum256([]byte(canon))
	return hex.EncodeToString(sum[:8])
}
