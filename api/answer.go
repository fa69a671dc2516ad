package api

import (
	"encoding/json"
	"net/http"

	"github.com/notifyd/notifyd/internal/idempotency"
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

// requestOf is what a request asks for, in the terms of the idempotency
// rules (internal/idempotency: Same, AnsweredBy).
func requestOf(n notification, by string) idempotency.Request {
	return idempotency.Request{By: by, SessionID: n.SessionID, OrderNo: n.OrderNo, Channels: n.Channels}
}
