# Shared by scripts/test and scripts/bench: install and start the brokers the tests need.
# A fresh machine has none of them installed or running. What these functions start, they stop
# when the calling script exits; a broker that was already running is used as it is and never
# stopped or reconfigured.
# shellcheck shell=bash

# What this script started, stopped in reverse order at exit (see stop_started).
STARTED=()
stop_started() {
  local i
  for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
    eval "${STARTED[$i]}" >/dev/null 2>&1 || true
  done
}
trap stop_started EXIT

APT_UPDATED=""
apt_install() { # packages...
  if [[ -z "$APT_UPDATED" ]]; then
    apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# librdkafka is built from source with TLS (rdkafka's `ssl` feature): it needs OpenSSL's headers.
# The Kafka broker needs Maven (to fetch its jars) and Java 17+, both on the machine.
ensure_build_deps() {
  if ! dpkg -s libssl-dev pkg-config >/dev/null 2>&1; then
    echo "== installing libssl-dev pkg-config"
    apt_install libssl-dev pkg-config
  fi
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_port() { # host port seconds what
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    port_open "$1" "$2" && return 0
    sleep 0.1
  done
  echo "error: $4 did not open $1:$2 within $3 s" >&2
  return 1
}

# RabbitMQ on 127.0.0.1:5672: Debian's rabbitmq-server, installed if absent, started if nothing
# listens there.
ensure_rabbitmq() {
  port_open 127.0.0.1 5672 && return 0
  if ! command -v rabbitmq-server >/dev/null; then
    echo "== installing rabbitmq-server (Debian)"
    apt_install rabbitmq-server
  fi
  echo "== starting RabbitMQ"
  # The package's postinst may have started one already (where services may start).
  if ! port_open 127.0.0.1 5672; then
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 rabbitmq-server -detached
    STARTED+=("rabbitmqctl stop")
  fi
  wait_port 127.0.0.1 5672 120 RabbitMQ
}

# NATS with JetStream on 127.0.0.1:4222: Debian's nats-server, installed if absent, started if
# nothing listens there (JetStream store in a directory of its own, removed when stopped).
ensure_nats() {
  port_open 127.0.0.1 4222 && return 0
  if ! command -v nats-server >/dev/null; then
    echo "== installing nats-server (Debian)"
    apt_install nats-server
  fi
  echo "== starting NATS (JetStream)"
  local store
  store="$(mktemp -d -t callbridge-nats.XXXXXX)"
  nats-server -a 127.0.0.1 -p 4222 -js -sd "$store" -l "$store/nats.log" &
  STARTED+=("kill $! && rm -rf '$store'")
  wait_port 127.0.0.1 4222 30 NATS
}

# Apache Kafka, one node on free loopback ports with a fresh log directory, stopped at exit.
# Exports CALLBRIDGE_TEST_KAFKA (host:port). The first run fetches the jars with Maven.
start_kafka() {
  if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
    echo "error: Apache Kafka needs java (17+) and mvn on PATH" >&2
    return 1
  fi
  scripts/kafka/kafka install >/dev/null
  local dir bootstrap
  dir="$(mktemp -d -t callbridge-kafka.XXXXXX)"
  bootstrap="$(scripts/kafka/kafka configure "$dir" 1)"
  echo "== starting Apache Kafka on $bootstrap (logs: $dir/node-1/logs)"
  KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx768m}" \
    scripts/kafka/kafka run "$dir/node-1" >"$dir/node-1/out.log" 2>&1 &
  STARTED+=("kill $! && sleep 1 && kill -9 $! ; rm -rf '$dir'")
  wait_port 127.0.0.1 "$(cat "$dir/node-1/port")" 90 Kafka || { cat "$dir/node-1/out.log" >&2; return 1; }
  export CALLBRIDGE_TEST_KAFKA="$bootstrap"
}
