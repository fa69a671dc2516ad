package dispatch

import (
	"net/http"
	"net/url"
	"time"

	"github.com/notifyd/notifyd/schemas"
)

// ReceiptVerifier verifies the delivery receipts a kind's providers post
// to CallbackPrefix + the kind's name, and reads them. Implementations
// compare signatures in constant time and use nothing of a request before
// its signature is checked.
type ReceiptVerifier interface {
	// Verify checks the signature of a request to calledURL (the address
	// the provider called: api.public_url and the path, else the request's
	// own) with raw body, received now, and returns its receipts. A
	// BadSignature error means a missing or wrong signature (answered
	// 401); another error a verified request that is not a receipt (400).
	Verify(r *http.Request, calledURL string, body []byte, received time.Time) ([]VerifiedReceipt, error)
}

// Handshaker is a ReceiptVerifier that answers its provider's subscription
// check (a GET on its callback: Meta's hub.challenge).
type Handshaker interface {
	// Handshake returns the challenge to answer with, or false (403).
	Handshake(query url.Values) (challenge string, ok bool)
}

// VerifiedReceipt is one receipt of a verified request.
type VerifiedReceipt struct {
	// Event holds what the provider said (provider, provider_message_id,
	// status — empty for a status notifyd does not track —,
	// provider_status, error_code, error_detail, occurred_at, received_at,
	// and the channel the provider implies).
	Event schemas.DeliveryEvent
	// Recipient is the address the provider names, if it gave one.
	Recipient string
	// Accounts are the accounts of the kind the receipt was verified for
	// (see Accounter); none: it names an account its signer does not have
	// (a foreign message).
	Accounts []string
}

// BadSignature is a request whose signature is missing or wrong.
type BadSignature struct{ Why string }

func (b BadSignature) Error() string { return b.Why }
