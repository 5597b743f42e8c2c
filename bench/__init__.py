"""`make bench` (`python -m bench`): TelemetryPulse's benchmark report — throughput beside a bare-consumer ceiling
and a naive per-event pipeline measured in the same run, produce→PostgreSQL and produce→alert latency at a steady
rate, recovery time with a large state, and worker memory over a long run. Results go to bench/results/."""
