// Example consumers of callbridge's events, one per broker, in binary mode:
//
//	go run . kafka [--drain]      KAFKA_BROKERS, KAFKA_TOPICS, KAFKA_GROUP
//	go run . rabbitmq [--drain]   RABBITMQ_URL, RABBITMQ_QUEUE
//	go run . nats [--drain]       NATS_URL, NATS_STREAM, NATS_CONSUMER, NATS_FILTER
//
// Each dedupes by event id, keeps the latest status per call and prints a JSON summary at the
// end: with --drain once it has read what the broker held at startup, otherwise on Ctrl-C.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func env(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: consumer kafka|rabbitmq|nats [--drain]")
		os.Exit(2)
	}
	drain := len(os.Args) > 2 && os.Args[2] == "--drain"
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if drain {
		secs, _ := strconv.Atoi(env("DRAIN_TIMEOUT_SECS", "60"))
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(secs)*time.Second)
		defer cancel()
	}
	var c *calls
	var err error
	switch os.Args[1] {
	case "kafka":
		c, err = consumeKafka(ctx, drain)
	case "rabbitmq":
		c, err = consumeRabbitMQ(ctx, drain)
	case "nats":
		c, err = consumeNATS(ctx, drain)
	default:
		err = fmt.Errorf("unknown broker %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	fmt.Println(c.summary())
}

// printEvent shows a processed event while following (not while draining).
func printEvent(drain bool, d *CallData) {
	if drain {
		return
	}
	status := "-"
	if d.Status != nil {
		status = *d.Status
	}
	fmt.Println(d.CallID, d.Kind, status)
}
