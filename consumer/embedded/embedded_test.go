package embedded

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// TestLogSurvivesRestart: topics and records written to a broker are there
// after it is restarted on the same data directory, which is what lets
// notifyd keep its projection across restarts on the embedded default.
func TestLogSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := Start(Config{Listen: "127.0.0.1:0", DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	client := &kafka.Client{Addr: kafka.TCP(b.Addr())}
	if _, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: "t", NumPartitions: 1, ReplicationFactor: 1}}}); err != nil {
		t.Fatal(err)
	}
	w := &kafka.Writer{Addr: kafka.TCP(b.Addr()), Topic: "t", RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("k"), Value: []byte("v1")}, kafka.Message{Key: []byte("k"), Value: []byte("v2")}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	b.Close()

	b, err = Start(Config{Listen: "127.0.0.1:0", DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	conn, err := kafka.DialLeader(ctx, "tcp", b.Addr(), "t", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	first, last, err := conn.ReadOffsets()
	if err != nil {
		t.Fatal(err)
	}
	if first != 0 || last != 2 {
		t.Fatalf("after restart the log spans [%d, %d), want [0, 2)", first, last)
	}
}

func TestStartRejectsBadAddress(t *testing.T) {
	if _, err := Start(Config{Listen: "not-an-address"}); err == nil {
		t.Fatal("Start accepted a bad listen address")
	}
	if _, err := Start(Config{}); err == nil {
		t.Fatal("Start accepted an empty listen address")
	}
}

// TestStorageErrorWhenFull: with no room for a produce request's records in
// its data directory, the broker answers KAFKA_STORAGE_ERROR (code 56, as
// Apache Kafka does for a log directory it cannot write), nothing is
// appended, Err names it; with room again, produce works.
func TestStorageErrorWhenFull(t *testing.T) {
	var free atomic.Uint64
	free.Store(1 << 30)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := Start(Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(),
		space: func(string) (uint64, uint64, error) { return free.Load(), 1 << 31, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	client := &kafka.Client{Addr: kafka.TCP(b.Addr())}
	if _, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: "t", NumPartitions: 1, ReplicationFactor: 1}}}); err != nil {
		t.Fatal(err)
	}
	w := &kafka.Writer{Addr: kafka.TCP(b.Addr()), Topic: "t", RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, MaxAttempts: 1}
	defer w.Close()
	write := func() error { return w.WriteMessages(ctx, kafka.Message{Key: []byte("k"), Value: make([]byte, 1000)}) }
	if err := write(); err != nil {
		t.Fatal(err)
	}
	if err := b.Err(); err != nil {
		t.Fatalf("Err with room: %v", err)
	}

	free.Store(storageMargin + 500) // the margin, but not the record
	err = write()
	var werrs kafka.WriteErrors
	if !errors.As(err, &werrs) || len(werrs) != 1 || !errors.Is(werrs[0], kafka.KafkaStorageError) {
		t.Fatalf("produce with no room: %v, want KAFKA_STORAGE_ERROR", err)
	}
	if err := b.Err(); err != nil {
		t.Fatalf("Err with the margin free: %v", err)
	}
	free.Store(storageMargin - 1)
	if err := b.Err(); err == nil || !strings.Contains(err.Error(), "KAFKA_STORAGE_ERROR") {
		t.Fatalf("Err with less than the margin: %v", err)
	}

	free.Store(1 << 30)
	if err := write(); err != nil {
		t.Fatalf("produce with room again: %v", err)
	}
	conn, err := kafka.DialLeader(ctx, "tcp", b.Addr(), "t", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if first, last, err := conn.ReadOffsets(); err != nil || first != 0 || last != 2 {
		t.Fatalf("log spans [%d, %d) (%v), want [0, 2): the refused record must not be appended", first, last, err)
	}
}
