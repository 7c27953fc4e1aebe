"""Running Carousel's services as real processes on a private topology and ledger, and
waiting on conditions: shared by the tests and the benchmarks (which never import
``tests``)."""
