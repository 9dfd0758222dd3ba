"""What the serving benchmarks share: a `partnerpost serve` process, nginx and wrk."""
