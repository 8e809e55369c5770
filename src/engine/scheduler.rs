//! Which tokens run in the next step: pure logic over counts, no tensors (TGI's queue tests run in
//! microseconds for the same reason).
//!
//! Policy: every decoding sequence (one pending token) runs every step, so admitted requests keep
//! streaming while others prefill; the remaining token budget goes to prefills in arrival order,
//! a long prompt taking as many chunks as it needs (chunked prefill).

/// Tokens each sequence computes this step, given each one's pending (not yet computed) token count
/// in arrival order and the step's token budget. Decodes are never starved: they run even when
/// they alone exceed the budget.
pub fn plan_step(pending: &[usize], budget: usize) -> Vec<usize> {
    let mut take = vec![0; pending.len()];
    let mut used = 0;
    for (i, &p) in pending.iter().enumerate() {
        if p == 1 {
            take[i] = 1;
            used += 1;
        }
    }
    for (i, &p) in pending.iter().enumerate() {
        if p > 1 {
            let n = p.min(budget.saturating_sub(used));
            take[i] = n;
            used += n;
        }
    }
    take
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_first_then_prefill_chunks_in_order() {
        assert_eq!(plan_step(&[1, 300, 1, 400], 512), vec![1, 300, 1, 210]);
        assert_eq!(plan_step(&[0, 5], 4), vec![0, 4]);
    }

    #[test]
    fn decodes_run_even_over_budget() {
        assert_eq!(plan_step(&[1; 10], 4), vec![1; 10]);
        assert_eq!(plan_step(&[1, 1, 100], 2), vec![1, 1, 0]);
    }

    #[test]
    fn a_long_prompt_is_chunked_until_done() {
        let mut left = 1300;
        let mut steps = 0;
        while left > 1 {
            let t = plan_step(&[left], 512)[0];
            assert!(t <= 512 && t > 0);
            left -= t;
            steps += 1;
        }
        assert_eq!(steps, 3);
    }
}
