//! (rubric, response) -> verdicts -> aggregate -> reward; rubric formats (RaR, HealthBench, RLCF, ares JSONL).
