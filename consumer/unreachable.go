package consumer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"syscall"
	"time"

	"github.com/notifyd/notifyd/internal/backoff"
	"github.com/segmentio/kafka-go"
)

// Unreachable reports whether err means the brokers could not be reached or
// dropped the connection, rather than refused the request: a dial or I/O
// timeout, a refused or reset connection, a connection closed mid-response
// (io.EOF, io.ErrUnexpectedEOF: what a pooled connection to a broker that
// restarted gives on its next request), or a Kafka error the protocol marks
// temporary (a leader or controller being elected), or a request that
// timed out (context.DeadlineExceeded: kafka.Client's Timeout). Such a
// request is worth repeating; any other error, and context.Canceled, is an
// answer, and so is a SecurityProblem (a TLS handshake or SASL
// authentication refused). RetryUnreachable stops on its own context, not
// on this.
func Unreachable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	if _, refused := SecurityProblem(err); refused {
		return false // TLS or SASL refused: repeating cannot help
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	// kafka.Error has Timeout and Temporary methods, so it is a net.Error
	// too: look at it first.
	var kerr kafka.Error
	if errors.As(err, &kerr) {
		return kerr.Temporary() || errors.Is(kerr, kafka.BrokerNotAvailable) || errors.Is(kerr, kafka.NotController)
	}
	var netErr net.Error
	return errors.As(err, &netErr) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// RetryUnreachable calls fn until it returns nil or an error that is not
// Unreachable, waiting between calls (internal/backoff: from 500 ms, doubling, up to
// 10 s, jittered), and
// logging each retry at Warn on log (when not nil) as "<what>: kafka not
// reachable yet, retrying". It gives up when ctx ends, returning fn's last
// error wrapped with the context's cause.
func RetryUnreachable(ctx context.Context, log *slog.Logger, what string, fn func(context.Context) error) error {
	wait := backoff.Backoff{First: 500 * time.Millisecond, Max: 10 * time.Second}
	for {
		err := fn(ctx)
		if err == nil || !Unreachable(err) {
			return err
		}
		next, _ := wait.Next()
		if log != nil {
			attrs := []any{"error", err, "in", next}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				// A broker that closes the connection on its first request
				// may be restarting, or be a listener whose security the
				// client does not match (TLS or SASL expected, or not).
				attrs = append(attrs, "hint", "the broker closed the connection: if this lasts, check that kafka.tls and kafka.sasl match the listener of kafka.brokers")
			}
			log.Warn(what+": kafka not reachable yet, retrying", attrs...)
		}
		if cause := backoff.Sleep(ctx, next); cause != nil {
			return fmt.Errorf("%s: %w (last error: %w)", what, cause, err)
		}
	}
}
