package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

var kinds = []string{"started", "status", "recording", "analysis", "processed", "other"}

// consumeKafka reads callbridge's topics in a consumer group (franz-go). Each record: value = the
// event's `data`, key = the call id, CloudEvents attributes in `ce_*` headers (`ce_id` = the
// event id). A record that is not an event (no `ce_id`, or a value the typed model refuses) is
// skipped and counted. Offsets are committed after processing: a crash re-reads, the dedupe absorbs it.
func consumeKafka(ctx context.Context, drain bool) (*calls, error) {
	defaults := make([]string, len(kinds))
	for i, k := range kinds {
		defaults[i] = "calls." + k
	}
	topics := strings.Split(env("KAFKA_TOPICS", strings.Join(defaults, ",")), ",")
	client, err := kgo.NewClient(
		kgo.SeedBrokers(strings.Split(env("KAFKA_BROKERS", "127.0.0.1:9092"), ",")...),
		kgo.ConsumerGroup(env("KAFKA_GROUP", "example-go")),
		kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
	)
	if err != nil {
		return nil, err
	}
	defer client.Close()

	// Where each partition ends now: --drain stops once everything up to there is read.
	remaining := map[string]map[int32]int64{}
	if drain {
		ends, err := kadm.NewClient(client).ListEndOffsets(ctx, topics...)
		if err != nil {
			return nil, err
		}
		starts, err := kadm.NewClient(client).ListStartOffsets(ctx, topics...)
		if err != nil {
			return nil, err
		}
		var failed error
		ends.Each(func(o kadm.ListedOffset) {
			if o.Err != nil {
				failed = fmt.Errorf("topic %s: %w", o.Topic, o.Err)
				return
			}
			if start, ok := starts.Lookup(o.Topic, o.Partition); ok && o.Offset > start.Offset {
				if remaining[o.Topic] == nil {
					remaining[o.Topic] = map[int32]int64{}
				}
				remaining[o.Topic][o.Partition] = o.Offset
			}
		})
		if failed != nil {
			return nil, failed
		}
	}

	c := newCalls("go-kafka")
	for !(drain && len(remaining) == 0) {
		fetches := client.PollFetches(ctx)
		if ctx.Err() != nil {
			if drain {
				return nil, fmt.Errorf("drain stopped (%v) with partitions unread: %v", ctx.Err(), remaining)
			}
			break
		}
		if errs := fetches.Errors(); len(errs) > 0 {
			return nil, errs[0].Err
		}
		fetches.EachRecord(func(r *kgo.Record) {
			var id string
			for _, h := range r.Headers {
				if h.Key == "ce_id" {
					id = string(h.Value)
				}
			}
			where := fmt.Sprintf("record %s/%d@%d", r.Topic, r.Partition, r.Offset)
			if d := c.parse(id, r.Value, where); d != nil && c.handle(id, d) {
				printEvent(drain, d)
			}
			if end, ok := remaining[r.Topic][r.Partition]; ok && r.Offset+1 >= end {
				delete(remaining[r.Topic], r.Partition)
				if len(remaining[r.Topic]) == 0 {
					delete(remaining, r.Topic)
				}
			}
		})
		if err := client.CommitUncommittedOffsets(context.Background()); err != nil {
			return nil, err
		}
	}
	return c, nil
}
