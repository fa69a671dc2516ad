package embedded

import (
	"context"
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
