package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// consumeNATS reads the stream with a durable pull consumer (nats.go jetstream). Each message:
// payload = the event's `data`, Nats-Msg-Id = the event id (the stream already drops a second
// copy within its duplicate window), CloudEvents attributes in `ce-*` headers (percent-encoded).
// A message that is not an event (no Nats-Msg-Id, or a payload the typed model refuses) is
// skipped and counted, never taken for a duplicate.
// The durable consumer keeps its position across restarts; unacked messages are redelivered.
func consumeNATS(ctx context.Context, drain bool) (*calls, error) {
	nc, err := nats.Connect(env("NATS_URL", nats.DefaultURL))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	stream, durable := env("NATS_STREAM", "CALLS"), env("NATS_CONSUMER", "example-go")
	cons, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable:       durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		FilterSubject: env("NATS_FILTER", ""),
	})
	if err != nil {
		return nil, fmt.Errorf("consumer %s on stream %s: %w", durable, stream, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, err
	}
	waiting := int64(info.NumPending)
	c := newCalls("go-nats")
	for !(drain && waiting <= 0) {
		batch, err := cons.Fetch(64, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return nil, err
		}
		for m := range batch.Messages() {
			id := m.Headers().Get(nats.MsgIdHdr)
			if d := c.parse(id, m.Data(), "message "+m.Subject()); d != nil && c.handle(id, d) {
				printEvent(drain, d)
			}
			if err := m.Ack(); err != nil {
				return nil, err
			}
			waiting--
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, err
		}
		if ctx.Err() != nil {
			if drain {
				return nil, fmt.Errorf("drain stopped (%v) with %d messages unread", ctx.Err(), waiting)
			}
			break
		}
	}
	return c, nil
}
