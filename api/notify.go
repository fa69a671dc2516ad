package api

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/notifyd/notifyd/schemas"
)

// The header of idempotent requests and of answers replayed from the
// idempotency table.
const (
	headerIdempotencyKey = "Idempotency-Key"
	headerReplayed       = "Idempotent-Replayed"
)

// notify answers POST /b/pbl/v2/message-notification/: it publishes a
// resend command and waits for its delivery result.
func (s *Server) notify(e *exchange) {
	r := e.r
	n, cmd, keyGiven, ok := s.readCommand(e)
	if !ok {
		return
	}

	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	default:
		e.w.Header().Set("Retry-After", "1")
		e.detail(http.StatusServiceUnavailable, "Service unavailable: too many requests waiting for a result.")
		return
	}
	s.m.waiting.Inc()
	defer s.m.waiting.Dec()
	// Register before looking up and publishing: the result cannot slip
	// between the two.
	results, cancel := s.deps.Results.WatchResult(cmd.CommandID)
	defer cancel()
	publish := true
	if keyGiven {
		raw, found, err := s.deps.Results.Result(cmd.CommandID)
		if err != nil {
			s.unavailable(e, "look up result", err)
			return
		}
		if found {
			s.answerResult(e, n, raw, "")
			return
		}
		release, other, _, held := s.keysInFlight.Hold(cmd.CommandID, requestOf(n, e.principal.Name))
		switch {
		case held:
			defer release()
		case !other.Same(requestOf(n, e.principal.Name)):
			e.detail(http.StatusUnprocessableEntity, msgKeyReused)
			return
		default:
			publish = false // the same request again: wait for the first one's result
		}
	}
	if publish {
		if err := s.deps.Commands.PublishCommand(r.Context(), cmd, correlationID(r)); err != nil {
			if r.Context().Err() != nil {
				return // the client left
			}
			s.unavailable(e, "publish command", err)
			return
		}
	}
	mine := cmd.RequestedAt
	if !publish {
		mine = "" // a result of the request being waited for is a replay to this one
	}
	if !keyGiven {
		mine = "-" // no key: the result is this request's own
	}
	timer := time.NewTimer(s.cfg.Wait)
	defer timer.Stop()
	select {
	case raw := <-results:
		s.answerResult(e, n, raw, mine)
	case <-timer.C:
		s.pending(e, cmd.CommandID)
	case <-s.stopping:
		s.pending(e, cmd.CommandID)
	case <-r.Context().Done():
		s.log.Info("api client left before its result", "command_id", cmd.CommandID)
	}
}

// readCommand reads a notification request into its resend command, in
// the gateway's order: the Idempotency-Key (400), the body's size (413),
// type (415) and fields (400). keyGiven: the command_id is the client's
// Idempotency-Key, else a new UUIDv7. ok is false once answered.
func (s *Server) readCommand(e *exchange) (n notification, cmd schemas.ResendCommand, keyGiven, ok bool) {
	r := e.r
	key, keyGiven := r.Header[headerIdempotencyKey]
	if keyGiven && (len(key) != 1 || !validIdempotencyKey(key[0])) {
		e.detail(http.StatusBadRequest, "Idempotency-Key must be given once, 1 to 128 characters, without control characters.")
		return n, cmd, keyGiven, false
	}
	body, err := readBody(e.w, r, MaxBodyBytes)
	switch {
	case errors.Is(err, errBodyTooLarge):
		e.detail(http.StatusRequestEntityTooLarge, fmt.Sprintf("Request body exceeds %d bytes.", MaxBodyBytes))
		return n, cmd, keyGiven, false
	case err != nil:
		e.detail(http.StatusBadRequest, "Could not read the request body.")
		return n, cmd, keyGiven, false
	}
	n, errs, err := decodeBody(r.Header.Get("Content-Type"), body)
	var malformed *malformedError
	switch {
	case errors.Is(err, errUnsupportedMediaType):
		e.detail(http.StatusUnsupportedMediaType, fmt.Sprintf("Unsupported media type %q in request.", echo(r.Header.Get("Content-Type"))))
		return n, cmd, keyGiven, false
	case errors.As(err, &malformed):
		e.detail(http.StatusBadRequest, malformed.detail)
		return n, cmd, keyGiven, false
	case len(errs) > 0:
		e.reply(answer{http.StatusBadRequest, errs})
		return n, cmd, keyGiven, false
	}
	merchant := e.principal.Merchant
	switch {
	case merchant == "":
		merchant = n.MerchantID // a platform principal names the merchant, or none
	case n.MerchantID != "" && n.MerchantID != merchant:
		e.detail(http.StatusForbidden, msgForbidden)
		return n, cmd, keyGiven, false
	}
	cmd = schemas.ResendCommand{
		SessionID: n.SessionID, OrderNo: n.OrderNo, MerchantID: merchant, Channels: n.Channels, Force: n.Force,
		RequestedBy: e.principal.Name, RequestedAt: time.Now().UTC().Format(time.RFC3339Nano),
	}
	if keyGiven {
		cmd.CommandID = scopedCommandID(merchant, key[0])
	} else {
		id, err := uuid.NewV7()
		if err != nil {
			e.detail(http.StatusInternalServerError, "Internal error.")
			return n, cmd, keyGiven, false
		}
		cmd.CommandID = id.String()
	}
	e.named(cmd.CommandID)
	return n, cmd, keyGiven, true
}

// scopedCommandID is the command_id of a request with an Idempotency-Key
// for merchantID: the key itself without a merchant (a platform principal
// naming none: the command_id every client had before merchants), else
// "<merchant_id>:<key>", so that two merchants using the same key make two
// commands (a merchant_id holds no ':'). One longer than a command_id may
// be is "<merchant_id>:sha256:<hex of the key's SHA-256, 52 characters>".
func scopedCommandID(merchantID, key string) string {
	if merchantID == "" {
		return key
	}
	id := merchantID + ":" + key
	if utf8.RuneCountInString(id) <= schemas.MaxIDLength {
		return id
	}
	sum := sha256.Sum256([]byte(key))
	return merchantID + ":sha256:" + hex.EncodeToString(sum[:])[:52]
}

// answerResult answers with a delivery result. requestedAt is the
// requested_at of the command this request published: a result of another
// command with the same command_id (an earlier request with the same
// Idempotency-Key) is a replay, answered with Idempotent-Replayed: true,
// or 422 when that request asked for something else. "" means the request
// published nothing (every result is a replay), "-" that it had no
// Idempotency-Key (the result is its own). Comparing requested_at, which
// this instance wrote, rather than times of two clocks keeps the header
// right across instances whose clocks differ.
func (s *Server) answerResult(e *exchange, n notification, raw []byte, requestedAt string) {
	var res schemas.DeliveryResult
	if err := json.Unmarshal(raw, &res); err != nil {
		s.internal(e, "decode result", err)
		return
	}
	if requestedAt != "-" && res.RequestedAt != requestedAt {
		if !requestOf(n, e.principal.Name).AnsweredBy(res) {
			e.detail(http.StatusUnprocessableEntity, msgKeyReused)
			return
		}
		note(e.r, "replayed", true)
		e.w.Header().Set(headerReplayed, "true")
	}
	e.reply(resultAnswer(n, res, raw))
}

// pending answers 202: the command is published, its result not yet in.
func (s *Server) pending(e *exchange, commandID string) {
	e.w.Header().Set("Location", PathNotifications+url.PathEscape(commandID)+"/")
	e.reply(answer{http.StatusAccepted, map[string]string{"command_id": commandID, "status": "pending"}})
}
