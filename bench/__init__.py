"""`make bench` (`python -m bench`): TelemetryPulse's benchmark report — throughput on two datasets (45 and 1,000
devices) beside a bare-consumer ceiling, the Faust floor, the batch baseline (batch + PostgreSQL transaction) and a
naive per-event pipeline measured in the same run; the keep-up phase at 12,500 devices (backlog, latency, a rate
ladder, Kafka bytes per input byte); recovery time with a large state; API latency; memory over a long run. Issue
11's targets beside their baselines. `make bench-quick` for iterating. Results go to bench/results/."""
