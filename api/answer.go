package api

import (
	"encoding/json"
	"net/http"
	"slices"

	"github.com/notifyd/notifyd/schemas"
)

// answer is an HTTP status and its JSON body.
type answer struct {
	status int
	body   any
}

// failedAnswer is the gateway's answer when a channel was not sent, with
// notifyd's extra members after the gateway's own.
type failedAnswer struct {
	SessionID      string          `json:"session_id,omitempty"`
	OrderNo        string          `json:"order_no,omitempty"`
	Channels       schemas.Channel `json:"channels"`
	Result         string          `json:"result"`
	Detail         string          `json:"detail"`
	DeliveryResult json.RawMessage `json:"delivery_result"`
}

// detail is the body of answers that are not about the request's fields.
type detail struct {
	Detail string `json:"detail"`
}

// resultAnswer maps a delivery result to the gateway's answer. given is the
// request (its identifiers are echoed as the client gave them); raw is the
// result as published, embedded whole in failure answers.
//
//   - notified: 200 {"message": "Customer notified."}
//   - a channel not sent: 400 {"session_id"|"order_no": <as given>,
//     "channels": <the first channel not sent>, "result": "failed",
//     "detail": <the result's message>, "delivery_result": <the result>}
//   - unknown_transaction: 400 {"session_id": ["No transaction with this
//     session_id."]} (order_no likewise; both when both were given)
//   - identifier_mismatch and any other whole-command reason: 400
//     {"non_field_errors": [<the result's detail>]}
func resultAnswer(given notification, r schemas.DeliveryResult, raw []byte) answer {
	if r.Outcome == schemas.OutcomeNotified {
		return answer{http.StatusOK, map[string]string{"message": schemas.MessageNotified}}
	}
	switch r.Reason {
	case "":
	case schemas.ReasonUnknownTransaction:
		errs := fieldErrors{}
		if given.SessionID != "" {
			errs.add("session_id", "No transaction with this session_id.")
		}
		if given.OrderNo != "" {
			errs.add("order_no", "No transaction with this order_no.")
		}
		return answer{http.StatusBadRequest, errs}
	default:
		msg := r.Detail
		if msg == "" {
			msg = r.Message
		}
		return answer{http.StatusBadRequest, fieldErrors{fieldNonField: {msg}}}
	}
	a := failedAnswer{SessionID: given.SessionID, OrderNo: given.OrderNo, Result: "failed", Detail: r.Message, DeliveryResult: raw}
	for _, c := range r.Channels {
		if c.Status != schemas.StatusSent {
			a.Channels = c.Channel
			break
		}
	}
	return answer{http.StatusBadRequest, a}
}

// sameRequest reports whether a stored result answers this request, for an
// Idempotency-Key used again: the same client, the same channels in the
// same order, and identifiers that name the same transaction (each
// identifier given must be the result's; the result carries the
// transaction's identifiers, so a retry that adds the other one of the
// same transaction is the same request).
func sameRequest(given notification, requestedBy string, r schemas.DeliveryResult) bool {
	if r.RequestedBy != requestedBy {
		return false
	}
	if given.SessionID != "" && given.SessionID != r.SessionID {
		return false
	}
	if given.OrderNo != "" && given.OrderNo != r.OrderNo {
		return false
	}
	if r.Reason != "" {
		// Whole-command answers have no channels to compare; the
		// identifiers are the command's own, so they must match exactly.
		return given.SessionID == r.SessionID && given.OrderNo == r.OrderNo
	}
	if len(r.Channels) != len(given.Channels) {
		return false
	}
	for i, c := range r.Channels {
		if c.Channel != given.Channels[i] {
			return false
		}
	}
	return true
}

// notificationFrom is a request with an Idempotency-Key in flight: what it
// asked for and who asked.
type notificationFrom struct {
	n  notification
	by string
}

// same reports whether two requests in flight with one Idempotency-Key ask
// for the same thing: the same client, the same channels in the same order,
// and identifiers that agree where both give one and share at least one.
// Before a result names the transaction, a request naming it by session_id
// and one naming it by order_no cannot be told to be the same: they are
// taken as different (422), so that neither can be sent twice.
func (a notificationFrom) same(b notificationFrom) bool {
	if a.by != b.by || !slices.Equal(a.n.Channels, b.n.Channels) {
		return false
	}
	shared := false
	for _, ids := range [][2]string{{a.n.SessionID, b.n.SessionID}, {a.n.OrderNo, b.n.OrderNo}} {
		if ids[0] != "" && ids[1] != "" {
			if ids[0] != ids[1] {
				return false
			}
			shared = true
		}
	}
	return shared
}
