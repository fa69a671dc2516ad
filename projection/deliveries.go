package projection

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"maps"

	"github.com/cockroachdb/pebble"

	"github.com/notifyd/notifyd/schemas"
)

// The delivery index, for providers' receipts:
//
//	x/<provider_message_id> -> Correlation
//	    every message a result reported sent, from the results topic (in
//	    indexResult): which command, result, transaction and channel a
//	    receipt is about;
//	v/<provider_message_id> -> schemas.DeliveryEvent
//	    the delivery event with the message's furthest status, from the
//	    deliveries topic (and written here by the instance that published
//	    it, before it is read back);
//	d/<topic>/<partition BE32> -> next offset of the deliveries topic.
//
// Provider message ids are unique per provider (Twilio's SM…, Meta's
// wamid.…, a webhook's own): the index is keyed by the id alone.
const (
	prefixCorrelation    = "x/"
	prefixDelivery       = "v/"
	prefixDeliveryOffset = "d/"
)

// Correlation is what the results topic says about a provider message.
type Correlation struct {
	CommandID string `json:"command_id"`
	ResultID  string `json:"result_id"`
	SessionID string `json:"session_id"`
	OrderNo   string `json:"order_no,omitempty"`
	// MerchantID is the result's; empty in results from before merchants.
	MerchantID string          `json:"merchant_id,omitempty"`
	Channel    schemas.Channel `json:"channel"`
	Provider   string          `json:"provider"`
	// Account is the provider account that sent it (the result's
	// provider_account); empty in results from before notifyd recorded it.
	Account string `json:"account,omitempty"`
}

// indexSent records the correlation of a channel a result reported sent,
// and puts the channel on the needs-attention list when a final failure
// receipt for its message, from the sender the result names, was applied
// before the result (the topics are read independently).
func indexSent(b *pebble.Batch, r *schemas.DeliveryResult, c schemas.ChannelResult) error {
	if c.ProviderMessageID == "" {
		return nil
	}
	v, err := json.Marshal(Correlation{CommandID: r.CommandID, ResultID: r.ResultID, SessionID: r.SessionID, OrderNo: r.OrderNo,
		MerchantID: r.MerchantID, Channel: c.Channel, Provider: c.Provider, Account: c.ProviderAccount})
	if err != nil {
		return err
	}
	if err := b.Set([]byte(prefixCorrelation+c.ProviderMessageID), v, nil); err != nil {
		return err
	}
	ev, found, err := getDelivery(b, c.ProviderMessageID)
	if err != nil || !found || !ev.Status.Final() || !ev.From(c.Provider, c.ProviderAccount) {
		return err // a claim of another sender, read before the result, is no failure of this message
	}
	ev.SessionID, ev.OrderNo, ev.MerchantID, ev.Channel, ev.CommandID = r.SessionID, r.OrderNo, r.MerchantID, c.Channel, r.CommandID
	return deliveryAttention(b, ev)
}

// Correlate returns what the results topic says about a provider message;
// ok is false when no result read so far reported it sent.
func (s *Store) Correlate(providerMessageID string) (c Correlation, ok bool, err error) {
	v, found, err := getCopy(s.db, []byte(prefixCorrelation+providerMessageID))
	if err != nil || !found {
		return Correlation{}, false, wrapErr("correlate", err)
	}
	if err := json.Unmarshal(v, &c); err != nil {
		return Correlation{}, false, fmt.Errorf("correlate: corrupt entry for %q: %w", providerMessageID, err)
	}
	return c, true, nil
}

// Delivery returns the delivery event with the furthest status of a
// provider message; ok is false when no receipt for it was applied.
func (s *Store) Delivery(providerMessageID string) (ev schemas.DeliveryEvent, ok bool, err error) {
	ev, ok, err = getDelivery(s.db, providerMessageID)
	return ev, ok, wrapErr("delivery", err)
}

func getDelivery(r interface {
	Get([]byte) ([]byte, io.Closer, error)
}, id string) (schemas.DeliveryEvent, bool, error) {
	var ev schemas.DeliveryEvent
	v, found, err := getCopy(r, []byte(prefixDelivery+id))
	if err != nil || !found {
		return ev, false, err
	}
	if err := json.Unmarshal(v, &ev); err != nil {
		return ev, false, fmt.Errorf("corrupt delivery of %q: %w", id, err)
	}
	return ev, true, nil
}

func wrapErr(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}

// applyDelivery keeps ev when it moves its message's status further
// (schemas.DeliveryEvent.Moves), and reports whether it did.
func applyDelivery(b *pebble.Batch, ev schemas.DeliveryEvent) (bool, error) {
	if ev.ProviderMessageID == "" || !ev.Status.Valid() {
		return false, nil
	}
	prev, found, err := getDelivery(b, ev.ProviderMessageID)
	if err != nil {
		return false, err
	}
	if !ev.Moves(prev, found) {
		return false, nil
	}
	v, err := json.Marshal(ev)
	if err != nil {
		return false, err
	}
	if err := b.Set([]byte(prefixDelivery+ev.ProviderMessageID), v, nil); err != nil {
		return false, err
	}
	if ev.Status.Final() {
		return true, deliveryAttention(b, ev)
	}
	return true, nil
}

// deliveryAttention puts the channel of a message whose delivery failed
// (undelivered, failed) on the needs-attention list, when that message is
// the channel's latest attempt (a later send supersedes it, and removes
// the entry as a sent result removes any).
func deliveryAttention(b *pebble.Batch, ev schemas.DeliveryEvent) error {
	if ev.SessionID == "" || ev.Channel == "" {
		return nil // not correlated: indexSent does it when the result comes
	}
	ck := channelKey(ev.SessionID, ev.Channel)
	raw, found, err := getCopy(b, ck)
	if err != nil || !found {
		return err
	}
	var st channelState
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("corrupt channel state %q: %w", ck, err)
	}
	if st.CommandID != ev.CommandID {
		return nil
	}
	if st.Attention != nil {
		if err := b.Delete(st.Attention, nil); err != nil {
			return err
		}
	}
	st.Attention = attentionKey(ev.OccurredAt, ev.SessionID, ev.Channel)
	detail := ev.ErrorDetail
	if ev.ErrorCode != "" {
		detail = fmt.Sprintf("%s %s (error %s)", ev.ProviderStatus, detail, ev.ErrorCode)
	}
	return putChannelState(b, ck, st, &AttentionItem{
		SessionID: ev.SessionID, OrderNo: ev.OrderNo, MerchantID: ev.MerchantID, Channel: ev.Channel, Delivery: ev.Status, Provider: ev.Provider,
		Detail: detail, CommandID: ev.CommandID, ProcessedAt: ev.OccurredAt,
	})
}

// ApplyDeliveries applies records of one deliveries-topic partition in one
// batch with the partition's next offset. Records that are not delivery
// events are skipped (logged).
func (s *Store) ApplyDeliveries(partition int, records []Record) error {
	if len(records) == 0 {
		return nil
	}
	if s.opts.DeliveriesTopic == "" {
		return fmt.Errorf("apply deliveries: no DeliveriesTopic in the store's options")
	}
	b := s.db.NewIndexedBatch()
	defer s.release(b)
	for _, r := range records {
		var ev schemas.DeliveryEvent
		if err := json.Unmarshal(r.Value, &ev); err != nil || ev.ProviderMessageID == "" {
			s.log.Warn("delivery event skipped: not a delivery event", "partition", partition, "offset", r.Offset)
			continue
		}
		if _, err := applyDelivery(b, ev); err != nil {
			return fmt.Errorf("apply deliveries partition %d offset %d: %w", partition, r.Offset, err)
		}
	}
	next := records[len(records)-1].Offset + 1
	if err := b.Set(offsetKey(prefixDeliveryOffset, s.opts.DeliveriesTopic, partition), binary.BigEndian.AppendUint64(nil, uint64(next)), nil); err != nil {
		return fmt.Errorf("apply deliveries: %w", err)
	}
	if err := s.commit("apply_deliveries", b, pebble.NoSync); err != nil {
		return fmt.Errorf("apply deliveries: %w", err)
	}
	s.publish(s.deliveryOffsets, partition, next, 0)
	return nil
}

// RecordDelivery applies a delivery event this instance published, before
// it is read back from the topic, so that a repeated receipt is known at
// once. It reports whether the event moved its message's status further.
func (s *Store) RecordDelivery(ev schemas.DeliveryEvent) (bool, error) {
	b := s.db.NewIndexedBatch()
	defer s.release(b)
	changed, err := applyDelivery(b, ev)
	if err != nil || !changed {
		return false, wrapErr("record delivery", err)
	}
	if err := s.commit("record_delivery", b, pebble.NoSync); err != nil {
		return false, fmt.Errorf("record delivery: %w", err)
	}
	return true, nil
}

// DeliveryOffsets is EventOffsets for the deliveries topic.
func (s *Store) DeliveryOffsets() map[int]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.deliveryOffsets)
}
