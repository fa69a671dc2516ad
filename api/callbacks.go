package api

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/notifyd/notifyd/dispatch"
	"github.com/notifyd/notifyd/schemas"
)

// Receipts takes providers' verified receipts: the callbacks' only way
// into Kafka.
type Receipts interface {
	// RecordReceipt turns a receipt into a delivery event and returns once
	// it is published (acknowledged by the brokers) or known to change
	// nothing; an error means the provider should be answered so that it
	// tries again. ev holds what the provider said (provider,
	// provider_message_id, status, provider_status, error_code,
	// error_detail, occurred_at, received_at, and the channel the provider
	// implies); recipient, when the provider gave it, is masked in the
	// detail; accounts are the accounts of ev.Provider's kind the receipt
	// was verified for (see dispatch.Accounter): a message another account
	// sent is left as it is, with dispatch.ErrForeignReceipt.
	RecordReceipt(ctx context.Context, ev schemas.DeliveryEvent, recipient string, accounts []string) error
}

// Paths of the receipt callbacks.
const (
	PathCallbackTwilio  = dispatch.CallbackPrefix + "twilio"
	PathCallbackMeta    = dispatch.CallbackPrefix + "meta"
	PathCallbackWebhook = dispatch.CallbackPrefix + "webhook"
)

// Results of a callback (notifyd_callbacks_total{provider,result}).
const (
	callbackAccepted     = "accepted"      // verified, recorded (published or nothing to change)
	callbackIgnored      = "ignored"       // verified, a status notifyd does not track (queued, ...)
	callbackBadSignature = "bad_signature" // 401: missing or wrong signature, nothing published
	callbackInvalid      = "invalid"       // 400: verified but not a receipt
	callbackFailed       = "failed"        // 503: could not be recorded; the provider tries again
	// callbackForeign: verified, about a message another provider account
	// sent (200, nothing changed).
	callbackForeign = "foreign_message"
)

// callbackResults are the results of callbacks, as counted.
var callbackResults = []string{callbackAccepted, callbackIgnored, callbackForeign, callbackBadSignature, callbackInvalid, callbackFailed}

// callbackRoutes adds the receipt callback of each provider kind with a
// verifier (Deps.Callbacks, built by dispatch.Registry.LiveReceipts or
// Receipts): POST CallbackPrefix+kind, and GET for a kind that answers a
// subscription handshake. A kind without one is not routed (404), nor is
// one whose live verifier has no provider taking receipts now
// (dispatch.ErrNoReceipts).
func (s *Server) callbackRoutes(mux *http.ServeMux) {
	for kind, v := range s.deps.Callbacks {
		path := dispatch.CallbackPrefix + kind
		if hs, ok := v.(dispatch.Handshaker); ok {
			mux.HandleFunc("GET "+path, func(w http.ResponseWriter, r *http.Request) {
				reply := s.callbackReply(w, r, kind)
				if challenge, ok := hs.Handshake(r.URL.Query()); ok {
					reply(http.StatusOK, callbackAccepted, challenge)
					return
				}
				reply(http.StatusForbidden, callbackBadSignature, "verification failed")
			})
		}
		s.callbackRoute(mux, path, kind, v)
	}
}

// callbackRoute routes a provider's receipts (POST) to receive; another
// method is answered 405.
func (s *Server) callbackRoute(mux *http.ServeMux, path, provider string, verify dispatch.ReceiptVerifier) {
	mux.HandleFunc("POST "+path, func(w http.ResponseWriter, r *http.Request) {
		s.receive(w, r, provider, verify)
	})
	mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", "POST")
		s.callbackReply(w, r, provider)(http.StatusMethodNotAllowed, callbackInvalid, "method not allowed")
	})
}

// replyFunc answers a callback: its status, its result (counted in
// notifyd_callbacks_total and noted on the access line) and a plain-text
// message (none: an empty body).
type replyFunc func(code int, result, msg string)

func (s *Server) callbackReply(w http.ResponseWriter, r *http.Request, provider string) replyFunc {
	return func(code int, result, msg string) {
		s.m.callback(provider, result)
		note(r, "provider", provider, "result", result)
		w.Header().Set("Cache-Control", "no-store")
		if msg == "" {
			w.WriteHeader(code)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(code)
		_, _ = io.WriteString(w, msg+"\n")
	}
}

// receive answers a provider's receipts. Verification comes first:
// nothing of an unverified request is parsed beyond what the signature
// covers, or published.
func (s *Server) receive(w http.ResponseWriter, r *http.Request, provider string, verify dispatch.ReceiptVerifier) {
	reply := s.callbackReply(w, r, provider)
	body, err := readBody(w, r, maxCallbackBody)
	switch {
	case errors.Is(err, errBodyTooLarge):
		reply(http.StatusRequestEntityTooLarge, callbackInvalid, "body too large")
		return
	case err != nil:
		reply(http.StatusBadRequest, callbackInvalid, "could not read the body")
		return
	}
	receipts, err := verify.Verify(r, s.callbackURL(r), body, time.Now().UTC())
	var bad dispatch.BadSignature
	switch {
	case errors.Is(err, dispatch.ErrNoReceipts):
		// No provider of the kind, the platform's or a merchant's, takes
		// receipts now: as a path that is not served.
		http.NotFound(w, r)
		return
	case errors.As(err, &bad):
		s.log.Warn("callback refused: "+bad.Error(), "provider", provider)
		reply(http.StatusUnauthorized, callbackBadSignature, "invalid signature")
		return
	case err != nil:
		reply(http.StatusBadRequest, callbackInvalid, err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.Wait)
	defer cancel()
	switch recorded, foreign, failed := s.record(ctx, provider, receipts); {
	case failed:
		reply(http.StatusServiceUnavailable, callbackFailed, "not recorded, try again")
	case recorded:
		reply(http.StatusOK, callbackAccepted, "")
	case foreign:
		s.log.Warn("callback: receipts about messages another provider account sent, ignored", "provider", provider)
		reply(http.StatusOK, callbackForeign, "")
	default: // every status one notifyd does not track
		reply(http.StatusOK, callbackIgnored, "")
	}
}

// record records the receipts of one request before it is answered: the
// provider is answered 200 only for what is published. They are recorded
// at once (Meta batches them), so that several waiting for their results
// cost one wait, not one each. recorded: one was published or changed
// nothing; foreign: one names a message of another account; failed: one
// could not be recorded (the provider sends the request again).
func (s *Server) record(ctx context.Context, provider string, receipts []dispatch.VerifiedReceipt) (recorded, foreign, failed bool) {
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		panicked any
	)
	for _, rc := range receipts {
		if !rc.Event.Status.Valid() {
			continue
		}
		if len(rc.Accounts) == 0 {
			mu.Lock()
			foreign = true // verified, but for none of the accounts it names
			mu.Unlock()
			continue
		}
		wg.Go(func() {
			defer func() {
				if p := recover(); p != nil { // answered 500 by the handler's guard, after the others
					mu.Lock()
					panicked = p
					mu.Unlock()
				}
			}()
			err := s.deps.Receipts.RecordReceipt(ctx, rc.Event, rc.Recipient, rc.Accounts)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, dispatch.ErrForeignReceipt):
				foreign = true
			case err != nil:
				failed = true
				s.log.Error("callback: receipt not recorded; the provider will send it again", "provider", provider,
					"provider_message_id", rc.Event.ProviderMessageID, "error", err)
			default:
				recorded = true
			}
		})
	}
	wg.Wait()
	if panicked != nil {
		panic(panicked)
	}
	return recorded, foreign, failed
}

// callbackURL is the address a provider called: api.public_url plus path,
// else the request's own (scheme from TLS, host from the Host header).
func (s *Server) callbackURL(r *http.Request) string {
	if s.cfg.PublicURL != "" {
		return strings.TrimSuffix(s.cfg.PublicURL, "/") + r.URL.RequestURI()
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + r.URL.RequestURI()
}
