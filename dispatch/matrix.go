package dispatch

import "github.com/notifyd/notifyd/schemas"

// emailSMSStates are the states email and sms can notify about.
var emailSMSStates = []schemas.State{
	schemas.StateCreated, schemas.StatePaid, schemas.StateCanceled,
	schemas.StateFailed, schemas.StateExpired, schemas.StateAuthorized,
	schemas.StateVoided, schemas.StateRefunded, schemas.StateCaptured,
}

// whatsAppStates are the states whatsapp can notify about.
var whatsAppStates = []schemas.State{
	schemas.StateCreated, schemas.StatePaid, schemas.StateCanceled,
	schemas.StateFailed, schemas.StateExpired, schemas.StateAuthorized,
}

// SupportedStates returns the states ch can notify about, in a stable order,
// or nil for an unknown channel. The slice is a copy.
func SupportedStates(ch schemas.Channel) []schemas.State {
	switch ch {
	case schemas.ChannelEmail, schemas.ChannelSMS:
		return append([]schemas.State(nil), emailSMSStates...)
	case schemas.ChannelWhatsApp:
		return append([]schemas.State(nil), whatsAppStates...)
	}
	return nil
}

// Supports reports whether channel ch can notify about state st: the channel
// matrix. email and sms support created, paid, canceled, failed, expired,
// authorized, voided, refunded and captured; whatsapp supports created, paid,
// canceled, failed, expired and authorized. No channel supports any other
// state, and an unknown channel supports nothing.
func Supports(ch schemas.Channel, st schemas.State) bool {
	var list []schemas.State
	switch ch {
	case schemas.ChannelEmail, schemas.ChannelSMS:
		list = emailSMSStates
	case schemas.ChannelWhatsApp:
		list = whatsAppStates
	}
	for _, s := range list {
		if s == st {
			return true
		}
	}
	return false
}
