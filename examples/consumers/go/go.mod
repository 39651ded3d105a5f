module callbridge.example/consumers

go 1.24.0

require (
	github.com/nats-io/nats.go v1.47.0
	github.com/rabbitmq/amqp091-go v1.10.0
	github.com/twmb/franz-go v1.20.0
	github.com/twmb/franz-go/pkg/kadm v1.16.0
)

require (
	github.com/klauspost/compress v1.18.0 // indirect
	github.com/nats-io/nkeys v0.4.11 // indirect
	github.com/nats-io/nuid v1.0.1 // indirect
	github.com/pierrec/lz4/v4 v4.1.22 // indirect
	github.com/twmb/franz-go/pkg/kmsg v1.12.0 // indirect
	golang.org/x/crypto v0.43.0 // indirect
	golang.org/x/sys v0.37.0 // indirect
)
