package consumer

import (
	"github.com/notifyd/notifyd/dispatch"
	"github.com/notifyd/notifyd/projection"
	"github.com/notifyd/notifyd/schemas"
)

// This file is what the operator console reads, besides PublishCommand,
// WatchResult and Result: the projection and the history index of this
// instance's store (every instance follows every topic, so any instance
// answers), and the dispatcher's checks, the same code that decides
// commands. Each method returns ErrNotRunning before the service has
// started or after it stopped.

// Lookup returns the current snapshot of the transaction sessionID names,
// or, with sessionID empty, the one orderNo names within merchantID (""
// is schemas.MerchantDefault). A merchantID given limits the answer to
// that merchant's transactions: another merchant's is not found.
func (s *Service) Lookup(merchantID, sessionID, orderNo string) (schemas.PaymentEvent, bool, error) {
	store, _, err := s.storeAndDispatcher()
	if err != nil {
		return schemas.PaymentEvent{}, false, err
	}
	if sessionID == "" {
		sid, ok, err := store.SessionForOrder(merchantID, orderNo)
		if err != nil || !ok {
			return schemas.PaymentEvent{}, false, err
		}
		sessionID = sid
	}
	txn, ok, err := store.Transaction(sessionID)
	if err != nil || !ok || (merchantID != "" && txn.MerchantID != merchantID) {
		return schemas.PaymentEvent{}, false, err
	}
	return txn, true, nil
}

// Check is the dispatcher's channel checks for txn (dispatch.Dispatcher.Check).
func (s *Service) Check(txn schemas.PaymentEvent) ([]dispatch.ChannelCheck, error) {
	_, d, err := s.storeAndDispatcher()
	if err != nil {
		return nil, err
	}
	return d.Check(txn), nil
}

// History returns the delivery results of a transaction, newest first, at
// most limit (projection.Store.History).
func (s *Service) History(sessionID string, limit int) ([][]byte, error) {
	store, _, err := s.storeAndDispatcher()
	if err != nil {
		return nil, err
	}
	return store.History(sessionID, limit)
}

// Attention lists the channels that need attention (projection.Store.Attention).
func (s *Service) Attention(f projection.AttentionFilter) ([]projection.AttentionItem, string, error) {
	store, _, err := s.storeAndDispatcher()
	if err != nil {
		return nil, "", err
	}
	return store.Attention(f)
}

// Counts returns the per-merchant counts of channel results
// (projection.Store.Counts).
func (s *Service) Counts(f projection.CountsFilter) ([]projection.ChannelCounts, string, error) {
	store, _, err := s.storeAndDispatcher()
	if err != nil {
		return nil, "", err
	}
	return store.Counts(f)
}

// Recent returns the transactions with the latest payment events
// (projection.Store.Recent).
func (s *Service) Recent(f projection.RecentFilter) ([]schemas.PaymentEvent, string, error) {
	store, _, err := s.storeAndDispatcher()
	if err != nil {
		return nil, "", err
	}
	return store.Recent(f)
}

// FindPrefix returns the transactions whose session_id or order_no starts
// with a prefix (projection.Store.FindPrefix).
func (s *Service) FindPrefix(f projection.PrefixFilter) ([]schemas.PaymentEvent, bool, error) {
	store, _, err := s.storeAndDispatcher()
	if err != nil {
		return nil, false, err
	}
	return store.FindPrefix(f)
}

// Delivery returns the furthest delivery status of a provider message
// (projection.Store.Delivery).
func (s *Service) Delivery(providerMessageID string) (schemas.DeliveryEvent, bool, error) {
	store, _, err := s.storeAndDispatcher()
	if err != nil {
		return schemas.DeliveryEvent{}, false, err
	}
	return store.Delivery(providerMessageID)
}

// storeAndDispatcher returns the store and the dispatcher of the running
// service.
func (s *Service) storeAndDispatcher() (*projection.Store, *dispatch.Dispatcher, error) {
	p := s.parts()
	if p.store == nil || p.dispatcher == nil {
		return nil, nil, ErrNotRunning
	}
	return p.store, p.dispatcher, nil
}
