#!/usr/bin/env python3
# Usage: profile_share.py FOLDED [BRIDGE_US_PER_EVENT] (benches/profile.sh calls it).
"""Shares of a collapsed-stack profile (inferno-collapse-perf output): inclusive share of
samples whose stack holds a frame matching each category (first match wins per sample in
the order given for the exclusive column), plus the top self (leaf) functions."""
import re, sys, collections
path = sys.argv[1]
us_per_event = float(sys.argv[2]) if len(sys.argv) > 2 else None
cats = [
 ("HTTP parse/serve (actix-http, h1 codec)", r"actix_http::h1::|actix_http::h1"),
 ("JSON parse of the body (serde_json::from_slice → Value)", r"serde_json::de::|from_slice"),
 ("normalise (event::normalize)", r"callbridge::event::(callback|agent_event|normalize|fields|transcript)"),
 ("event id (SHA-256)", r"callbridge::event::id|sha2::"),
 ("serialise the event (Outgoing::new)", r"callbridge::event::binding::Outgoing::new|binding::structured"),
 ("answer body (delivery_body / json)", r"callbridge::ingest::response|HttpResponseBuilder::json"),
 ("ledger", r"callbridge::ledger::"),
 ("kafka sink (rdkafka, librdkafka)", r"callbridge::sinks::kafka|rdkafka|rd_kafka"),
 ("rabbitmq sink (lapin, amq-protocol)", r"callbridge::sinks::rabbitmq|lapin::|amq_protocol"),
 ("nats sink (async-nats)", r"callbridge::sinks::nats|async_nats::"),
 ("metrics (prometheus)", r"prometheus::|callbridge::metrics"),
 ("tracing (spans, filters)", r"tracing_subscriber|tracing_core|tracing::span|tracing_opentelemetry|opentelemetry"),
 ("tokio scheduler (spawn, wake, park)", r"tokio::runtime::(task|scheduler|park|context|blocking)|tokio::task::spawn"),
 ("allocator (mimalloc)", r"\bmi_|_mi_|mimalloc"),
 ("kernel: sockets (read, write, epoll, TCP loopback)", r"__x64_sys_(read|write|recvfrom|sendto|sendmsg|recvmsg|epoll_wait|writev)|tcp_|sock_|ep_poll|do_epoll"),
 ("kernel: context switches, thread park/wake (futex, finish_task_switch)", r"futex|finish_task_switch|__schedule\b|schedule_hrtimeout|try_to_wake_up"),
]
total = 0
incl = collections.Counter()
excl = collections.Counter()
leaf = collections.Counter()
for line in open(path):
    line = line.rstrip("\n")
    if not line: continue
    stack, _, n = line.rpartition(" ")
    n = int(n); total += n
    frames = stack.split(";")
    leaf[frames[-1]] += n
    hit_first = None
    for name, rx in cats:
        if any(re.search(rx, f) for f in frames):
            incl[name] += n
    # exclusive: innermost frame of the stack that matches a category decides
    for f in reversed(frames):
        m = next((name for name, rx in cats if re.search(rx, f)), None)
        if m: hit_first = m; break
    excl[hit_first or "other"] += n
print(f"samples: {total}")
print("| cost | inclusive share | self share (innermost category)" + (" | µs per event (self)" if us_per_event else "") + " |")
print("|---|---:|---:|" + ("---:|" if us_per_event else ""))
for name, _ in cats + [("other", None)]:
    i = incl.get(name, 0) / total * 100
    e = excl.get(name, 0) / total * 100
    extra = f" {e/100*us_per_event:.1f} |" if us_per_event else ""
    print(f"| {name} | {i:.1f} % | {e:.1f} % |{extra}")
print("\ntop self functions:")
for f, n in leaf.most_common(25):
    print(f"{n/total*100:5.1f} %  {f[:150]}")
