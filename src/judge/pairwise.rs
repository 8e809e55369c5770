//! Pairwise judging (`ares judge --pairwise`): two responses to one item, compared against the
//! item's rubric in one prompt (`templates/judge_pairwise.txt`), asked in both orders.
//!
//! Each order is one forward whose next-token probabilities on "A"/"B" (with and without a
//! leading space, renormalised, as the logprob mode reads "Yes"/"No") give P(the response shown
//! first is better). With `p1` = P(A better) when A is shown first and `p2` = P(A better) when A
//! is shown second, the pair's preference is `(p1 + p2) / 2` (a constant pull towards one position
//! adds to one and subtracts from the other, so it cancels) and the margin `2 * preference - 1`
//! in [-1, 1] (positive: A is better). The orders disagree when they pick different winners
//! (`(p1 - 0.5) * (p2 - 0.5) < 0`); the rate of that over the pairs measures position bias.
//!
//! Invariants: both orders of all pairs are submitted at once (the engine batches them and the
//! orders share the question and rubric prefix); a pair whose prompt does not fit or whose
//! answer tokens got no probability gets a status other than `ok` and no preference, never a
//! silent 0.5. Responses are defused like the judge's ([`defuse`]).
//!
//! With a verdict cache ([`PairwiseJudge::with_cache`]) each order's answer distribution is
//! stored under a key of the model, this template's hash, the question, the rubric as shown and
//! the two responses in their order (the first length-prefixed, so no two pairs share a key), and
//! a hit skips the engine.

use serde::{Deserialize, Serialize};

use crate::engine::{Generator, Prompt, Request, SamplingParams};
use crate::error::Error as EngineError;
use crate::judge::cache::{CacheKey, CachedVerdict, VerdictCache};
use crate::judge::judge::{defuse, render_rubric, JudgeError};
use crate::judge::record::Mode;
use crate::judge::record::Status;
use crate::judge::rubric::RubricItem;
use crate::judge::template::PromptTemplate;
use crate::judge::verdict::AnswerTokens;
use crate::model::tokenizer::Tokenizer;

/// Version of [`PairwiseRecord`].
pub const PAIRWISE_RECORD_VERSION: u32 = 1;

/// Which response a pair prefers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Winner {
    A,
    B,
    Tie,
}

/// One pair to compare.
#[derive(Debug, Clone, Copy)]
pub struct Comparison<'a> {
    pub item: &'a RubricItem,
    pub a_id: &'a str,
    pub a: &'a str,
    pub b_id: &'a str,
    pub b: &'a str,
}

/// What a comparison gave (one output line of `ares judge --pairwise`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairwiseRecord {
    pub item_id: String,
    pub response_a: String,
    pub response_b: String,
    pub status: Status,
    /// P(A better) with A shown first, and with A shown second.
    pub p_a_shown_first: Option<f64>,
    pub p_a_shown_second: Option<f64>,
    /// P(A better), both orders averaged.
    pub preference: Option<f64>,
    /// `2 * preference - 1`: positive prefers A, negative B.
    pub margin: Option<f64>,
    pub winner: Option<Winner>,
    /// The two orders picked different winners.
    pub order_disagreement: Option<bool>,
    /// Probability mass on the A/B tokens in each order (A first, A second).
    pub verdict_mass: Vec<f64>,
    pub model_sha256: String,
    pub template_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub schema_version: u32,
}

/// Totals of a pairwise job.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PairwiseSummary {
    pub pairs: usize,
    pub ok: usize,
    pub failed: usize,
    pub order_disagreements: usize,
    /// Disagreements / ok pairs.
    pub order_disagreement_rate: Option<f64>,
    /// Prompts sent to the engine / answered by the verdict cache.
    pub requests: usize,
    pub cache_hits: usize,
    /// Why new distributions could not be stored, if so (the records are still right).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_error: Option<String>,
    pub prompt_tokens: usize,
    pub cached_tokens: usize,
    pub seconds: f64,
}

/// Pairwise judge over a generator.
pub struct PairwiseJudge<'g> {
    generator: &'g dyn Generator,
    template: PromptTemplate,
    tokens: AnswerTokens,
    model_sha256: String,
    control_texts: Vec<String>,
    cache: Option<&'g VerdictCache>,
}

/// P(A better), P(B better) from one order's distribution over ["A", "B"] letters.
type OrderResult = Result<(f64, f64), (Status, String)>;

impl<'g> PairwiseJudge<'g> {
    pub fn new(
        generator: &'g dyn Generator,
        tokenizer: &Tokenizer,
        model_sha256: impl Into<String>,
    ) -> Result<Self, JudgeError> {
        let tokens = AnswerTokens::letters(|s| tokenizer.encode(s))?;
        let template = PromptTemplate::pairwise()?;
        Ok(PairwiseJudge {
            generator,
            template,
            tokens,
            model_sha256: model_sha256.into(),
            control_texts: tokenizer.control_token_texts(),
            cache: None,
        })
    }

    /// Reads and stores each order's answer distribution in `cache` (see the module docs).
    pub fn with_cache(mut self, cache: &'g VerdictCache) -> Self {
        self.cache = Some(cache);
        self
    }

    fn cache_key(&self, item: &RubricItem, first: &str, second: &str) -> [u8; 32] {
        let rubric = render_rubric(item);
        let responses = format!("{}:{first}{second}", first.len());
        CacheKey {
            model_sha256: &self.model_sha256,
            template_hash: self.template.hash(),
            // The template hash already sets pairwise keys apart; holistic is the mode whose
            // prompt shows the whole rubric.
            mode: Mode::Holistic,
            question: &item.question,
            criterion: &rubric,
            response: &responses,
        }
        .digest()
    }

    pub fn template_hash(&self) -> &str {
        self.template.hash()
    }

    /// The chat prompt showing `first` as A and `second` as B.
    pub fn prompt(
        &self,
        item: &RubricItem,
        first: &str,
        second: &str,
    ) -> Result<String, EngineError> {
        let rubric = render_rubric(item);
        let first = defuse(first, &self.control_texts);
        let second = defuse(second, &self.control_texts);
        let messages = self
            .template
            .render(&[
                ("question", &item.question),
                ("rubric", &rubric),
                ("first", &first),
                ("second", &second),
            ])
            .map_err(|e| EngineError::ChatTemplate(e.to_string()))?;
        self.generator.chat_prompt(&messages)
    }

    fn blank(&self, c: &Comparison<'_>) -> PairwiseRecord {
        PairwiseRecord {
            item_id: c.item.id.clone(),
            response_a: c.a_id.to_string(),
            response_b: c.b_id.to_string(),
            status: Status::Error,
            p_a_shown_first: None,
            p_a_shown_second: None,
            preference: None,
            margin: None,
            winner: None,
            order_disagreement: None,
            verdict_mass: Vec::new(),
            model_sha256: self.model_sha256.clone(),
            template_hash: self.template.hash().to_string(),
            error: None,
            schema_version: PAIRWISE_RECORD_VERSION,
        }
    }

    /// Compares every pair in both orders; one record per pair, in order.
    pub fn compare(&self, pairs: &[Comparison<'_>]) -> (Vec<PairwiseRecord>, PairwiseSummary) {
        let t0 = std::time::Instant::now();
        let mut summary = PairwiseSummary {
            pairs: pairs.len(),
            ..Default::default()
        };
        // Two prompts per pair: A first, then B first. `results` holds every order's answer;
        // cache hits are filled in now, the rest after the engine answers.
        let mut reqs = Vec::new();
        let mut keys: Vec<Option<[u8; 32]>> = Vec::new();
        let mut results: Vec<Option<OrderResult>> = Vec::new();
        let mut slots: Vec<[Option<usize>; 2]> = Vec::with_capacity(pairs.len());
        let mut prompt_errors: Vec<Option<(Status, String)>> = vec![None; pairs.len()];
        for (k, c) in pairs.iter().enumerate() {
            let mut slot = [None, None];
            for (o, (first, second)) in [(c.a, c.b), (c.b, c.a)].into_iter().enumerate() {
                let key = self.cache.map(|_| self.cache_key(c.item, first, second));
                let hit = match (self.cache, key) {
                    (Some(cache), Some(key)) => match cache.get(&key) {
                        Ok(Some(CachedVerdict::Distribution { probs, mass }))
                            if probs.len() == 2 =>
                        {
                            Some((probs[0], mass))
                        }
                        Ok(_) => None,
                        Err(e) => {
                            summary.cache_error = Some(e.to_string());
                            None
                        }
                    },
                    _ => None,
                };
                if let Some(hit) = hit {
                    summary.cache_hits += 1;
                    slot[o] = Some(results.len());
                    results.push(Some(Ok(hit)));
                    keys.push(None);
                    continue;
                }
                match self.prompt(c.item, first, second) {
                    Ok(p) => {
                        slot[o] = Some(results.len());
                        results.push(None);
                        keys.push(key);
                        reqs.push(Request {
                            max_tokens: 1,
                            sampling: SamplingParams::greedy(),
                            logprob_ids: self.tokens.ids(),
                            ..Request::new(format!("pairwise/{k}/{o}"), Prompt::Text(p))
                        });
                    }
                    Err(e) => prompt_errors[k] = Some((Status::Error, format!("prompt: {e}"))),
                }
            }
            slots.push(slot);
        }
        summary.requests = reqs.len();
        let answers: Vec<OrderResult> = self
            .generator
            .generate_many(reqs)
            .into_iter()
            .map(|r| match r {
                Err(e @ EngineError::PromptTooLong { .. }) => {
                    Err((Status::ResponseTooLong, e.to_string()))
                }
                Err(e) => Err((Status::Error, format!("engine: {e}"))),
                Ok(c) => {
                    summary.prompt_tokens += c.usage.prompt_tokens;
                    summary.cached_tokens += c.usage.cached_tokens;
                    let requested = c
                        .tokens
                        .first()
                        .map(|t| t.requested.clone())
                        .unwrap_or_default();
                    self.tokens
                        .distribution(&requested)
                        .map(|d| (d.probs[0], d.mass))
                        .ok_or((
                            Status::JudgeUnparseable,
                            "no probability on the A/B tokens".to_string(),
                        ))
                }
            })
            .collect();
        // Engine answers go to the empty slots, in submission order; new ones are stored.
        let mut store = Vec::new();
        let mut answers = answers.into_iter();
        for (r, key) in results.iter_mut().zip(&keys) {
            if r.is_none() {
                let a = answers
                    .next()
                    .unwrap_or_else(|| Err((Status::Error, "engine gave no answer".into())));
                if let (Ok((p, mass)), Some(key)) = (&a, key) {
                    store.push((
                        *key,
                        CachedVerdict::Distribution {
                            probs: vec![*p, 1.0 - *p],
                            mass: *mass,
                        },
                    ));
                }
                *r = Some(a);
            }
        }
        if let (Some(cache), false) = (self.cache, store.is_empty()) {
            if let Err(e) = cache.insert_many(&store) {
                summary.cache_error = Some(e.to_string());
            }
        }
        let results: Vec<OrderResult> = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err((Status::Error, "no answer".into()))))
            .collect();
        let mut records = Vec::with_capacity(pairs.len());
        for (k, c) in pairs.iter().enumerate() {
            let mut rec = self.blank(c);
            let get = |o: usize| -> OrderResult {
                match slots[k][o] {
                    Some(i) => results[i].clone(),
                    None => Err(prompt_errors[k]
                        .clone()
                        .unwrap_or((Status::Error, "no prompt".into()))),
                }
            };
            match (get(0), get(1)) {
                (Ok((first_better_ab, mass_ab)), Ok((first_better_ba, mass_ba))) => {
                    let p1 = first_better_ab;
                    // With B shown first, "A" (the first) being better means B is.
                    let p2 = 1.0 - first_better_ba;
                    let pref = (p1 + p2) / 2.0;
                    let margin = 2.0 * pref - 1.0;
                    rec.status = Status::Ok;
                    rec.p_a_shown_first = Some(p1);
                    rec.p_a_shown_second = Some(p2);
                    rec.preference = Some(pref);
                    rec.margin = Some(margin);
                    rec.winner = Some(if margin.abs() < 1e-9 {
                        Winner::Tie
                    } else if margin > 0.0 {
                        Winner::A
                    } else {
                        Winner::B
                    });
                    let disagree = (p1 - 0.5) * (p2 - 0.5) < 0.0;
                    rec.order_disagreement = Some(disagree);
                    rec.verdict_mass = vec![mass_ab, mass_ba];
                    summary.ok += 1;
                    summary.order_disagreements += usize::from(disagree);
                }
                (Err((status, e)), _) | (_, Err((status, e))) => {
                    rec.status = status;
                    rec.error = Some(e);
                    summary.failed += 1;
                }
            }
            records.push(rec);
        }
        summary.order_disagreement_rate =
            (summary.ok > 0).then(|| summary.order_disagreements as f64 / summary.ok as f64);
        summary.seconds = t0.elapsed().as_secs_f64();
        (records, summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::{prompt_text, FakeAnswer, FakeGenerator};
    use crate::judge::{Category, Criterion};

    fn item() -> RubricItem {
        RubricItem::new(
            "q1",
            "What is the capital of France?",
            vec![
                Criterion::new("c1", "Says Paris", 5.0, Category::Essential),
                Criterion::new("c2", "Claims Lyon", -3.0, Category::Pitfall),
            ],
        )
    }

    /// A judge that prefers the response containing "Paris" with strength `s`, plus a pull of
    /// `bias` towards whatever is shown first (log-odds).
    fn judge(s: f32, bias: f32) -> FakeGenerator {
        FakeGenerator::new(move |req| {
            let p = prompt_text(req);
            let a_at = p.find("Response A:").unwrap_or(0);
            let b_at = p.find("Response B:").unwrap_or(0);
            let paris_first = p[a_at..b_at].contains("Paris");
            let paris_second = p[b_at..].contains("Paris");
            let logit_a =
                bias + if paris_first { s } else { 0.0 } + if paris_second { -s } else { 0.0 };
            let ids = req.logprob_ids.clone();
            // ids: [A, " A", B, " B"] (the test tokenizer spells each as one token).
            let la = logit_a / 2.0;
            FakeAnswer::logprobs(vec![(ids[0], la), (ids[2], -la)])
        })
    }

    /// A pairwise judge over `g` whose letters are single tokens 200..=203.
    fn pairwise(g: &FakeGenerator) -> Result<PairwiseJudge<'_>, JudgeError> {
        let encode = |s: &str| -> crate::error::Result<Vec<crate::TokenId>> {
            Ok(match ["A", " A", "B", " B"].iter().position(|v| *v == s) {
                Some(i) => vec![200 + i as crate::TokenId],
                None => vec![1, 2],
            })
        };
        Ok(PairwiseJudge {
            generator: g,
            template: PromptTemplate::pairwise()?,
            tokens: AnswerTokens::letters(encode)?,
            model_sha256: "sha".into(),
            control_texts: Vec::new(),
            cache: None,
        })
    }

    #[test]
    fn position_bias_cancels_and_disagreement_is_counted() -> Result<(), Box<dyn std::error::Error>>
    {
        let it = item();
        let pairs = [
            Comparison {
                item: &it,
                a_id: "r1",
                a: "Paris.",
                b_id: "r2",
                b: "Lyon.",
            },
            Comparison {
                item: &it,
                a_id: "r2",
                a: "Lyon.",
                b_id: "r1",
                b: "Paris.",
            },
            Comparison {
                item: &it,
                a_id: "r3",
                a: "Hmm.",
                b_id: "r4",
                b: "Ok.",
            },
        ];
        // A strong position bias: the first shown wins both orders of an undecided pair.
        let g = judge(1.0, 3.0);
        let j = pairwise(&g)?;
        let (recs, sum) = j.compare(&pairs);
        assert_eq!(sum.ok, 3);
        // Swapping the responses swaps the preference exactly: the bias cancelled.
        let (p0, p1) = (
            recs[0].preference.unwrap_or(0.0),
            recs[1].preference.unwrap_or(0.0),
        );
        assert!((p0 + p1 - 1.0).abs() < 1e-9, "{p0} {p1}");
        assert!(p0 > 0.5 && recs[0].winner == Some(Winner::A));
        assert_eq!(recs[1].winner, Some(Winner::B));
        assert!((recs[2].margin.unwrap_or(1.0)).abs() < 1e-9);
        assert_eq!(recs[2].winner, Some(Winner::Tie));
        // The bias (3) beats the preference (1): each order picks its first response.
        assert_eq!(recs[0].order_disagreement, Some(true));
        assert_eq!(recs[2].order_disagreement, Some(true));
        assert_eq!(sum.order_disagreement_rate, Some(1.0));
        // Without bias, the orders agree.
        let g = judge(1.0, 0.0);
        let j = pairwise(&g)?;
        let (recs, sum) = j.compare(&pairs[..2]);
        assert_eq!(sum.order_disagreements, 0);
        assert_eq!(recs[0].order_disagreement, Some(false));
        Ok(())
    }

    #[test]
    fn a_cached_rerun_gives_the_same_records_without_the_engine(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let it = item();
        let pairs = [
            Comparison {
                item: &it,
                a_id: "r1",
                a: "Paris.",
                b_id: "r2",
                b: "Lyon.",
            },
            Comparison {
                item: &it,
                a_id: "r1",
                a: "Paris.",
                b_id: "r3",
                b: "Lyon. Paris.",
            },
        ];
        let d = tempfile::tempdir()?;
        let cache = VerdictCache::open_dir(d.path())?;
        let g = judge(1.0, 0.5);
        let (first, s1) = pairwise(&g)?.with_cache(&cache).compare(&pairs);
        assert_eq!((s1.requests, s1.cache_hits, g.take_submits()), (4, 0, 4));
        let (again, s2) = pairwise(&g)?.with_cache(&cache).compare(&pairs);
        assert_eq!((s2.requests, s2.cache_hits, g.take_submits()), (0, 4, 0));
        assert_eq!(again, first);
        Ok(())
    }

    #[test]
    fn no_mass_on_the_letters_is_unparseable_not_a_tie() -> Result<(), Box<dyn std::error::Error>> {
        let it = item();
        let g = FakeGenerator::new(|_| FakeAnswer::text("A"));
        let j = pairwise(&g)?;
        let (recs, sum) = j.compare(&[Comparison {
            item: &it,
            a_id: "r1",
            a: "x",
            b_id: "r2",
            b: "y",
        }]);
        assert_eq!(recs[0].status, Status::JudgeUnparseable);
        assert_eq!(recs[0].preference, None);
        assert_eq!((sum.ok, sum.failed), (0, 1));
        Ok(())
    }
}
