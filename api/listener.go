package api

import (
	"log/slog"
	"net/http"
	"time"
)

// Timeouts bound what one connection of an HTTP listener may take: reading
// a request's headers, reading the whole request (its body included),
// writing the answer, and waiting idle for the next keep-alive request.
// Every listener notifyd serves (api.listen, http.listen) has all four, so
// a client that connects and sends nothing, sends slowly, or keeps an idle
// connection open cannot hold a connection (and its goroutine) for ever.
type Timeouts struct {
	ReadHeader, Read, Write, Idle time.Duration
}

// DefaultTimeouts are a listener's whose answers take at most write.
func DefaultTimeouts(write time.Duration) Timeouts {
	return Timeouts{ReadHeader: 5 * time.Second, Read: 30 * time.Second, Write: write, Idle: 2 * time.Minute}
}

// maxHeaderBytes bounds a request's headers on every listener.
const maxHeaderBytes = 16 << 10

// Server returns an http.Server for h with these timeouts and headers of
// at most maxHeaderBytes, logging its own errors to log at Debug.
func (t Timeouts) Server(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: t.ReadHeader,
		ReadTimeout:       t.Read,
		WriteTimeout:      t.Write,
		IdleTimeout:       t.Idle,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}
