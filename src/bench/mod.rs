//! The `bench` subcommand: throughput harness and report (llama-batched-bench table, judge workload).
