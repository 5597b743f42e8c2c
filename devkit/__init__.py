"""The development kit: everything around the runtime that a developer, the tests and the benchmark need, and that a
deployment never runs (not in the wheel).

* the local stack without Docker, split by concern: `local_kafka` (the broker), `local_postgres` (the cluster),
  `local_stack` (one clone's stack: `.devstack/`, `up`/`down`/`status`, the fault tests' crash and restart calls),
  `supervisor` (`make run`, `with-stack`), `__main__` (`python -m devkit …`, what the Makefile calls);
* the infrastructure of tests and bench: `processes` (`ChildProcess`: a child with its own log, started, waited ready
  and stopped by its pid), `deployment` (`Deployment`: an isolated pipeline with its own APP_ID, topics, database and
  processes), `kafka_io` (topics, offsets, the ordered and the batch producer, the topic reader), `databases`,
  `waiting`, `epoch` (µs since the epoch), `ports`, `pids`.

tests/ and bench/ import this package and never each other.
"""
