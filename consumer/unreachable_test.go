package consumer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

func TestUnreachable(t *testing.T) {
	dialErr := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"connection refused", fmt.Errorf("metadata: %w", dialErr), true},
		{"pooled connection to a restarted broker", fmt.Errorf("kafka.(*Client).CreateTopics: %w", io.ErrUnexpectedEOF), true},
		{"closed connection", io.EOF, true},
		{"reset", fmt.Errorf("read: %w", syscall.ECONNRESET), true},
		{"leader being elected", kafka.LeaderNotAvailable, true},
		{"broker not available", fmt.Errorf("x: %w", kafka.BrokerNotAvailable), true},
		{"not controller", kafka.NotController, true},
		{"authorization is an answer", kafka.TopicAuthorizationFailed, false},
		{"bad config is an answer", kafka.InvalidReplicationFactor, false},
		{"caller cancelled", context.Canceled, false},
		{"request timed out (client Timeout)", fmt.Errorf("x: %w", context.DeadlineExceeded), true},
		{"other", errors.New("topics missing (kafka.create_topics is false): a"), false},
	} {
		if got := Unreachable(tc.err); got != tc.want {
			t.Errorf("%s: Unreachable(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

func TestRetryUnreachable(t *testing.T) {
	calls := 0
	err := RetryUnreachable(context.Background(), nil, "x", func(context.Context) error {
		calls++
		if calls < 3 {
			return io.ErrUnexpectedEOF
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("got %v after %d calls, want nil after 3", err, calls)
	}

	answer := kafka.TopicAuthorizationFailed
	calls = 0
	err = RetryUnreachable(context.Background(), nil, "x", func(context.Context) error { calls++; return answer })
	if !errors.Is(err, answer) || calls != 1 {
		t.Fatalf("got %v after %d calls, want the answer after 1", err, calls)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	err = RetryUnreachable(ctx, nil, "start", func(context.Context) error { return io.EOF })
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, io.EOF) {
		t.Fatalf("got %v, want the deadline and the last error", err)
	}
}
