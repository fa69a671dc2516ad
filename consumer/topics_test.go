package consumer

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

func TestEnsureTopics(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prefix := h.topics.Commands + "-x-"
	specs := []TopicSpec{
		{Name: prefix + "compacted", Partitions: 3, ReplicationFactor: 1, Configs: DefaultTopicConfigs()["payment_events"]},
		{Name: prefix + "timed", Partitions: 2, ReplicationFactor: 1, Configs: map[string]string{"retention.ms": "3600000"}},
	}
	err := EnsureTopics(ctx, h.client, specs, false)
	if err == nil || !strings.Contains(err.Error(), prefix+"compacted") || !strings.Contains(err.Error(), prefix+"timed") || !strings.Contains(err.Error(), "kafka.create_topics") {
		t.Fatalf("create=false on missing topics: %v", err)
	}
	if err := EnsureTopics(ctx, h.client, specs, true); err != nil {
		t.Fatal(err)
	}
	if err := EnsureTopics(ctx, h.client, specs, false); err != nil {
		t.Fatalf("topics exist now: %v", err)
	}
	parts, err := Partitions(ctx, h.client, prefix+"compacted", prefix+"timed")
	if err != nil {
		t.Fatal(err)
	}
	if len(parts[prefix+"compacted"]) != 3 || len(parts[prefix+"timed"]) != 2 {
		t.Errorf("partitions %v", parts)
	}
	resp, err := h.client.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{
		{ResourceType: kafka.ResourceTypeTopic, ResourceName: prefix + "compacted", ConfigNames: []string{"cleanup.policy"}},
		{ResourceType: kafka.ResourceTypeTopic, ResourceName: prefix + "timed", ConfigNames: []string{"retention.ms"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range resp.Resources {
		for _, e := range r.ConfigEntries {
			got[r.ResourceName+"/"+e.ConfigName] = e.ConfigValue
		}
	}
	if got[prefix+"compacted/cleanup.policy"] != "compact" || got[prefix+"timed/retention.ms"] != "3600000" {
		t.Errorf("topic configs %v", got)
	}
}
