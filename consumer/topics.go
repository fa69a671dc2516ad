package consumer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/notifyd/notifyd/internal/backoff"
	"github.com/segmentio/kafka-go"
)

// TopicSpec describes a topic notifyd needs.
type TopicSpec struct {
	Name              string
	Partitions        int
	ReplicationFactor int
	// Configs are topic configs set at creation, e.g. cleanup.policy.
	Configs map[string]string
}

// EnsureTopics creates the topics of specs that do not exist yet, or, when
// create is false, returns an error naming the missing ones. Existing topics
// are left as they are.
func EnsureTopics(ctx context.Context, client *kafka.Client, specs []TopicSpec, create bool) error {
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	missing, err := missingTopics(ctx, client, names)
	if err != nil {
		return err
	}
	if len(missing) == 0 {
		return nil
	}
	if !create {
		return fmt.Errorf("topics missing (kafka.create_topics is false): %s", strings.Join(missing, ", "))
	}
	req := &kafka.CreateTopicsRequest{}
	for _, s := range specs {
		if !slices.Contains(missing, s.Name) {
			continue
		}
		tc := kafka.TopicConfig{Topic: s.Name, NumPartitions: s.Partitions, ReplicationFactor: s.ReplicationFactor}
		for k, v := range s.Configs {
			tc.ConfigEntries = append(tc.ConfigEntries, kafka.ConfigEntry{ConfigName: k, ConfigValue: v})
		}
		slices.SortFunc(tc.ConfigEntries, func(a, b kafka.ConfigEntry) int { return strings.Compare(a.ConfigName, b.ConfigName) })
		req.Topics = append(req.Topics, tc)
	}
	resp, err := client.CreateTopics(ctx, req)
	if err != nil {
		return fmt.Errorf("create topics %s: %w", strings.Join(missing, ", "), err)
	}
	for name, terr := range resp.Errors {
		if terr != nil && !errors.Is(terr, kafka.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", name, terr)
		}
	}
	return nil
}

func missingTopics(ctx context.Context, client *kafka.Client, names []string) ([]string, error) {
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: names})
	if err != nil {
		return nil, fmt.Errorf("topic metadata: %w", err)
	}
	var missing []string
	for _, t := range md.Topics {
		if errors.Is(t.Error, kafka.UnknownTopicOrPartition) || (t.Error == nil && len(t.Partitions) == 0) {
			missing = append(missing, t.Name)
		} else if t.Error != nil {
			return nil, fmt.Errorf("topic metadata %s: %w", t.Name, t.Error)
		}
	}
	for _, n := range names {
		if !slices.ContainsFunc(md.Topics, func(t kafka.Topic) bool { return t.Name == n }) && !slices.Contains(missing, n) {
			missing = append(missing, n)
		}
	}
	slices.Sort(missing)
	return missing, nil
}

// Partitions returns the partition ids of each topic.
func Partitions(ctx context.Context, client *kafka.Client, topics ...string) (map[string][]int, error) {
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		return nil, fmt.Errorf("topic metadata: %w", err)
	}
	out := make(map[string][]int, len(topics))
	for _, t := range md.Topics {
		if t.Error != nil {
			return nil, fmt.Errorf("topic metadata %s: %w", t.Name, t.Error)
		}
		for _, p := range t.Partitions {
			out[t.Name] = append(out[t.Name], p.ID)
		}
		slices.Sort(out[t.Name])
	}
	for _, name := range topics {
		if len(out[name]) == 0 {
			return nil, fmt.Errorf("topic %s has no partitions (does it exist?)", name)
		}
	}
	return out, nil
}

// Offsets are the log bounds of one partition: First is the earliest offset
// still stored, End the high-water mark (the offset the next record gets).
type Offsets struct{ First, End int64 }

// ListOffsets returns the first and end offsets of every partition of the
// given topics, in one metadata and one list-offsets round trip. Errors the
// broker marks temporary (a partition whose leader is moving or just being
// elected, as right after a topic is created) are retried for up to about
// 10 s, within ctx.
func ListOffsets(ctx context.Context, client *kafka.Client, topics ...string) (map[string]map[int]Offsets, error) {
	wait := backoff.Backoff{First: 50 * time.Millisecond, Max: time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		offs, err := listOffsets(ctx, client, topics...)
		var kerr kafka.Error
		if err == nil || !errors.As(err, &kerr) || !kerr.Temporary() || time.Now().After(deadline) {
			return offs, err
		}
		if wait.Wait(ctx) != nil {
			return nil, err
		}
	}
}

func listOffsets(ctx context.Context, client *kafka.Client, topics ...string) (map[string]map[int]Offsets, error) {
	parts, err := Partitions(ctx, client, topics...)
	if err != nil {
		return nil, err
	}
	req := &kafka.ListOffsetsRequest{Topics: make(map[string][]kafka.OffsetRequest, len(parts))}
	for t, ps := range parts {
		for _, p := range ps {
			req.Topics[t] = append(req.Topics[t], kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p))
		}
	}
	resp, err := client.ListOffsets(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("list offsets: %w", err)
	}
	out := make(map[string]map[int]Offsets, len(parts))
	for t, ps := range resp.Topics {
		m := make(map[int]Offsets, len(ps))
		for _, p := range ps {
			if p.Error != nil {
				return nil, fmt.Errorf("list offsets %s/%d: %w", t, p.Partition, p.Error)
			}
			m[p.Partition] = Offsets{First: p.FirstOffset, End: p.LastOffset}
		}
		out[t] = m
	}
	return out, nil
}
