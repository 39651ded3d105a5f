# Shared by scripts/test and scripts/bench: make the brokers the tests need available.
# shellcheck shell=bash

TANSU_VERSION="${TANSU_VERSION:-0.6.0}"

# librdkafka is built from source with TLS (rdkafka's `ssl` feature): it needs OpenSSL's headers.
ensure_build_deps() {
  if ! dpkg -s libssl-dev >/dev/null 2>&1; then
    echo "== installing libssl-dev"
    apt-get update -qq && apt-get install -y -qq libssl-dev pkg-config
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

ensure_rabbitmq() {
  if ! port_open 127.0.0.1 5672; then
    echo "== starting RabbitMQ"
    rabbitmq-server -detached
    wait_port 127.0.0.1 5672 120 RabbitMQ
  fi
}

ensure_nats() {
  if ! port_open 127.0.0.1 4222; then
    echo "== starting NATS (JetStream)"
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
      -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
    wait_port 127.0.0.1 4222 30 NATS
  fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Installs the pinned tansu (once; reused from ~/.cargo/bin) and starts it on a free port.
start_tansu() {
  local bin="${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
  if ! [[ -x "$bin" ]] || ! "$bin" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    echo "== installing tansu $TANSU_VERSION (first time: ~11 minutes)"
    cargo install --locked tansu --version "$TANSU_VERSION" --features dynostore
  fi
  local port
  port="$(free_port)"
  TANSU_LOG="${TANSU_LOG:-$(mktemp -t tansu.XXXXXX.log)}"
  echo "== starting tansu on 127.0.0.1:$port (log: $TANSU_LOG)"
  "$bin" broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ >"$TANSU_LOG" 2>&1 &
  TANSU_PID=$!
  trap 'kill "$TANSU_PID" 2>/dev/null || true' EXIT
  wait_port 127.0.0.1 "$port" 60 tansu
  export CALLBRIDGE_TEST_KAFKA="127.0.0.1:$port"
}
