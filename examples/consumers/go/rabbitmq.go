package main

import (
	"context"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"
)

// consumeRabbitMQ reads a queue bound to callbridge's exchange (amqp091-go), manual acks. Each
// message: body = the event's `data`, MessageId = the event id, Type = the event type,
// CloudEvents attributes in `cloudEvents_*` headers; one that is not an event (no MessageId, or
// a body the typed model refuses) is skipped and counted. Acked after processing: a crash redelivers,
// the dedupe absorbs it.
func consumeRabbitMQ(ctx context.Context, drain bool) (*calls, error) {
	conn, err := amqp.Dial(env("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return nil, err
	}
	queue := env("RABBITMQ_QUEUE", "calls.all")
	// The queue exists (the bridge declares it with `queues:`, or you did): passive, a check only.
	q, err := ch.QueueDeclarePassive(queue, false, false, false, false, nil)
	if err != nil {
		return nil, fmt.Errorf("queue %s: %w", queue, err)
	}
	waiting := q.Messages
	c := newCalls("go-rabbitmq")
	if drain && waiting == 0 {
		return c, nil
	}
	if err := ch.Qos(64, 0, false); err != nil {
		return nil, err
	}
	deliveries, err := ch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		return nil, err
	}
	for {
		select {
		case <-ctx.Done():
			if drain {
				return nil, fmt.Errorf("drain stopped (%v) with %d messages unread", ctx.Err(), waiting)
			}
			return c, nil
		case m, ok := <-deliveries:
			if !ok {
				return nil, fmt.Errorf("the channel closed")
			}
			where := fmt.Sprintf("message %s#%d", m.RoutingKey, m.DeliveryTag)
			if d := c.parse(m.MessageId, m.Body, where); d != nil && c.handle(m.MessageId, d) {
				printEvent(drain, d)
			}
			if err := m.Ack(false); err != nil { // after the work is done
				return nil, err
			}
			waiting--
			if drain && waiting == 0 {
				return c, nil
			}
		}
	}
}
