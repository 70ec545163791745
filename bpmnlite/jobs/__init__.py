"""Jobs: persisted continuations (async flags, timers), their retries and incidents."""
