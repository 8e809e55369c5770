//! The reward endpoints, both through the same [`Judge`] as `ares judge` (same prompts, verdict
//! tokens, aggregators, statuses), so a reward from the server equals the one from the CLI:
//! - `POST /get_reward`, OpenRLHF's remote reward model protocol: `{query, prompts?, labels?,
//!   metas?}` -> `{rewards, scores, extra_logs}` (plus `statuses`, `errors`, `item_ids`);
//! - `POST /v1/rubric/score`: one item (by id or inline) and its responses -> per-response
//!   records with the per-criterion breakdown.
//!
//! Invalid requests (unknown item id, bad inline rubric, empty lists, mismatched lengths, too
//! many criteria) are answered 4xx as a whole; a response that cannot be judged (too long, no
//! verdict) gets its status and a null reward (or `--failed-reward`), never a silent 0.

use std::collections::HashMap;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::judge::formats::{self, Format};
use crate::judge::relevance::{self, RelevanceScorer};
use crate::judge::{Aggregator, RubricItem};
use crate::judge::{Judge, JudgeConfig, JudgeRecord, JudgeSummary, Mode, RubricSet, Status};
use crate::server::bridge::{CancelFlag, Cancellable};
use crate::server::error::{ApiError, ApiResult};
use crate::server::limits::ApiJson;
use crate::server::monitor::{CriterionObservation, Observation};
use crate::server::AppState;

/// OpenRLHF's request: `query[i]` is prompt + response, `prompts[i]` the prompt, `labels[i]` the
/// item (an id, or an inline rubric as an object or a JSON string), `metas[i]` may carry
/// `item_id` or `rubric` instead.
#[derive(Debug, Deserialize)]
pub struct GetRewardRequest {
    pub query: Vec<String>,
    #[serde(default)]
    pub prompts: Vec<String>,
    #[serde(default)]
    pub labels: Vec<Value>,
    #[serde(default)]
    pub metas: Vec<Value>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct GetRewardResponse {
    /// Reward per query in [0, 1]; null (or `--failed-reward`) where the status is not ok.
    pub rewards: Vec<Option<f64>>,
    /// Same as `rewards` (OpenRLHF reads `scores` for dynamic filtering).
    pub scores: Vec<Option<f64>>,
    /// Per-sample numbers for the trainer's logs: `judge_ok` (1 or 0).
    pub extra_logs: Map<String, Value>,
    pub statuses: Vec<Status>,
    pub errors: Vec<Option<String>>,
    pub item_ids: Vec<String>,
}

/// A response to score: its text, or `{id?, response}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ScoreResponse {
    Text(String),
    Named {
        #[serde(default)]
        id: Option<String>,
        response: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreRequest {
    /// An item of the server's `--rubrics` file.
    #[serde(default)]
    pub item_id: Option<String>,
    /// An inline item in `format` (default ares; `schema_version` and `id` may be left out).
    #[serde(default)]
    pub item: Option<Value>,
    #[serde(default)]
    pub format: Option<Format>,
    pub responses: Vec<ScoreResponse>,
    #[serde(default)]
    pub mode: Option<Mode>,
    #[serde(default)]
    pub aggregator: Option<Aggregator>,
    #[serde(default)]
    pub hard: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ScoreResponseBody {
    pub item_id: String,
    pub rewards: Vec<Option<f64>>,
    pub records: Vec<JudgeRecord>,
    pub template_hash: String,
    pub mode: Mode,
}

/// An inline rubric in `format`; ares records may leave out `schema_version` and `id` (derived
/// from the question, like RaR's).
fn inline_item(value: Value, format: Format, what: &str) -> ApiResult<RubricItem> {
    let value = match value {
        Value::String(s) => serde_json::from_str::<Value>(&s).map_err(|e| {
            ApiError::invalid(format!("{what}: not an item id and not a JSON rubric: {e}"))
        })?,
        v => v,
    };
    let Value::Object(mut obj) = value else {
        return Err(ApiError::invalid(format!(
            "{what}: a rubric must be a JSON object"
        )));
    };
    // The ares reader takes lines without `schema_version` or `id` too; an inline rubric's id is
    // derived with its own prefix so it cannot collide with a file's item.
    if format == Format::Ares && !obj.contains_key("id") {
        let q = obj
            .get("question")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        obj.insert("id".into(), Value::from(formats::derived_id("inline", &q)));
    }
    formats::import(format, Value::Object(obj))
        .map_err(|e| ApiError::invalid(format!("{what}: invalid rubric: {e}")))
}

/// Collects the items of one request, rejecting two different rubrics under one id.
#[derive(Default)]
struct Items(HashMap<String, RubricItem>);

impl Items {
    fn add(&mut self, item: RubricItem, what: &str) -> ApiResult<String> {
        let id = item.id.clone();
        match self.0.get(&id) {
            Some(old) if *old != item => Err(ApiError::invalid(format!(
                "{what}: item id `{id}` names two different rubrics in this request"
            ))),
            Some(_) => Ok(id),
            None => {
                self.0.insert(id.clone(), item);
                Ok(id)
            }
        }
    }
}

/// The loaded item `id`, or 404.
fn loaded_item(state: &AppState, id: &str, what: &str) -> ApiResult<RubricItem> {
    if let Some(item) = state.inner.rubrics.get(id) {
        return Ok(item.clone());
    }
    if let Some(why) = state.inner.rubrics.rejection(id) {
        return Err(ApiError::invalid(format!(
            "{what}: item `{id}` was rejected when the rubrics were loaded: {why}"
        )));
    }
    Err(ApiError::not_found(format!(
        "{what}: unknown item id `{id}` (not in the server's --rubrics file; {} items loaded)",
        state.inner.rubrics.len()
    )))
}

/// The item a label or meta names.
fn resolve_label(state: &AppState, label: &Value, what: &str) -> ApiResult<RubricItem> {
    match label {
        Value::String(s) if state.inner.rubrics.get(s).is_some() => loaded_item(state, s, what),
        Value::String(s) if s.trim_start().starts_with('{') => {
            inline_item(label.clone(), Format::Ares, what)
        }
        Value::String(s) => loaded_item(state, s, what),
        Value::Number(n) => loaded_item(state, &n.to_string(), what),
        Value::Object(_) => inline_item(label.clone(), Format::Ares, what),
        other => Err(ApiError::invalid(format!(
            "{what}: expected an item id or a rubric object, got {other}"
        ))),
    }
}

/// Verdict requests `items` cause for `n` responses each, checked against the limit.
fn check_criteria(state: &AppState, mode: Mode, per_response: &[usize]) -> ApiResult<()> {
    let total: usize = per_response
        .iter()
        .map(|&c| if mode == Mode::Holistic { 1 } else { c })
        .sum();
    let max = state.limits().max_criteria;
    if total > max {
        return Err(ApiError::invalid(format!(
            "{total} verdict requests (criteria x responses) exceed the limit of {max} per request (--max-criteria)"
        )));
    }
    Ok(())
}

fn check_batch(state: &AppState, n: usize, what: &str) -> ApiResult<()> {
    if n == 0 {
        return Err(ApiError::invalid(format!("`{what}` is empty")));
    }
    let max = state.limits().max_batch;
    if n > max {
        return Err(ApiError::invalid(format!(
            "{n} {what} exceed the limit of {max} per request (--max-batch)"
        )));
    }
    Ok(())
}

/// Runs the judge on a blocking thread; the job's engine requests are cancelled if the client
/// goes away first.
async fn judge(
    state: &AppState,
    items: Vec<RubricItem>,
    responses: Vec<Query>,
    config: JudgeConfig,
) -> ApiResult<(Vec<JudgeRecord>, JudgeSummary, String)> {
    let flag = CancelFlag::default();
    let guard = flag.guard();
    let st = state.clone();
    let max_in_flight = config.max_in_flight;
    let job = tokio::task::spawn_blocking(move || {
        let generator = Cancellable {
            inner: st.engine().clone(),
            flag,
        };
        let judge = Judge::new(
            &generator,
            st.engine().tokenizer(),
            st.inner.config.model_sha256.clone(),
            config,
        )
        .map_err(|e| ApiError::internal(format!("judge: {e}")))?;
        let set = RubricSet::from_items(items);
        if let Some(e) = set.errors.first() {
            return Err(ApiError::invalid(e.clone()));
        }
        let mut inputs = Vec::with_capacity(responses.len());
        for q in &responses {
            let item = set.get(&q.item_id).ok_or_else(|| {
                ApiError::internal(format!("item `{}` vanished from its own set", q.item_id))
            })?;
            inputs.push((item, q.response_id.as_str(), q.response.as_str()));
        }
        let (mut records, mut summary) = judge.score_each(&inputs, &|_| {});
        if st.inner.config.relevance_gate {
            let scorer = RelevanceScorer::new(&generator, st.engine().tokenizer(), max_in_flight)
                .map_err(|e| ApiError::internal(format!("relevance gate: {e}")))?;
            let pairs: Vec<Option<(&str, &str)>> = inputs
                .iter()
                .map(|(item, _, text)| Some((item.question.as_str(), *text)))
                .collect();
            relevance::gate_records(&scorer, &mut records, &pairs, &mut summary, &|_, _| {});
        }
        Ok((records, summary, judge.template_hash().to_string()))
    });
    let result = job
        .await
        .map_err(|e| ApiError::internal(format!("judge task failed: {e}")))?;
    guard.disarm();
    let (records, summary, hash) = result?;
    let m = state.metrics();
    m.add_tokens(summary.prompt_tokens, summary.cached_tokens, 0);
    for r in &records {
        m.observe_reward(r.status.as_str());
    }
    Ok((records, summary, hash))
}

/// The group of query `i` of `/get_reward`: a group id in its meta (`group_id`, `group` or
/// verl's `uid`), else its prompt, else its item: the responses of one GRPO group share it.
fn group_key(req: &GetRewardRequest, i: usize, item_id: &str) -> String {
    let meta = req.metas.get(i).filter(|m| m.is_object());
    let id = meta.and_then(|m| {
        ["group_id", "group", "uid"]
            .iter()
            .find_map(|k| m.get(*k).filter(|v| !v.is_null()))
    });
    match id {
        Some(Value::String(s)) => format!("group:{s}"),
        Some(v) => format!("group:{v}"),
        None => match req.prompts.get(i) {
            Some(p) => format!("prompt:{p}"),
            None => format!("item:{item_id}"),
        },
    }
}

/// Hands a judged request's records to the reward monitors.
fn monitor(
    state: &AppState,
    route: &'static str,
    groups: Vec<String>,
    lens: &[usize],
    records: &[JudgeRecord],
) {
    let batch = records
        .iter()
        .zip(groups)
        .zip(lens)
        .map(|((r, group), &chars)| Observation {
            group,
            reward: r.reward,
            status: r.status.as_str().to_string(),
            response_chars: chars,
            criteria: r
                .criteria
                .iter()
                .map(|c| CriterionObservation {
                    key: format!("{}/{}", r.item_id.as_deref().unwrap_or("?"), c.id),
                    p_yes: c.p_yes,
                    verdict_mass: c.verdict_mass,
                })
                .collect(),
        })
        .collect();
    state.inner.monitor.observe(route, batch);
}

/// One response to judge against the item `item_id` of the request.
struct Query {
    item_id: String,
    response_id: String,
    response: String,
}

fn entry(item_id: &str, response_id: String, response: String) -> Query {
    Query {
        item_id: item_id.to_string(),
        response_id,
        response,
    }
}

/// `POST /get_reward`.
pub async fn get_reward(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<GetRewardRequest>,
) -> ApiResult<Json<GetRewardResponse>> {
    let n = req.query.len();
    check_batch(&state, n, "query")?;
    for (name, len) in [("labels", req.labels.len()), ("metas", req.metas.len())] {
        if len != 0 && len != n {
            return Err(ApiError::invalid(format!(
                "`{name}` has {len} entries for {n} queries"
            )));
        }
    }
    if !req.prompts.is_empty() && req.prompts.len() != n {
        return Err(ApiError::invalid(format!(
            "`prompts` has {} entries for {n} queries",
            req.prompts.len()
        )));
    }
    let mut items = Items::default();
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let what = format!("query {i}");
        let meta = req.metas.get(i).filter(|m| !m.is_null());
        let from_meta = meta.and_then(|m| m.get("rubric").or_else(|| m.get("item_id")));
        let item = match (from_meta, req.labels.get(i).filter(|l| !l.is_null())) {
            (Some(v), _) | (None, Some(v)) => resolve_label(&state, v, &what)?,
            (None, None) => {
                return Err(ApiError::invalid(format!(
                    "{what}: no label (item id or rubric) and no meta with `item_id` or `rubric`"
                )))
            }
        };
        ids.push(items.add(item, &what)?);
    }
    let config = state.inner.config.judge.clone();
    let counts: Vec<usize> = ids.iter().map(|id| items.0[id].criteria.len()).collect();
    check_criteria(&state, config.mode, &counts)?;
    let groups: Vec<String> = (0..n).map(|i| group_key(&req, i, &ids[i])).collect();
    let responses: Vec<Query> = req
        .query
        .into_iter()
        .enumerate()
        .map(|(i, q)| {
            let response = match req.prompts.get(i) {
                Some(p) if q.starts_with(p.as_str()) => q[p.len()..].to_string(),
                _ => q,
            };
            entry(&ids[i], i.to_string(), response)
        })
        .collect();
    let lens: Vec<usize> = responses
        .iter()
        .map(|q| q.response.chars().count())
        .collect();
    let (records, _, _) = judge(&state, items.0.into_values().collect(), responses, config).await?;
    monitor(&state, "/get_reward", groups, &lens, &records);
    let failed = state.inner.config.failed_reward;
    let rewards: Vec<Option<f64>> = records
        .iter()
        .map(|r| {
            if r.status == Status::Ok {
                r.reward
            } else {
                failed
            }
        })
        .collect();
    let mut extra_logs = Map::new();
    extra_logs.insert(
        "judge_ok".into(),
        Value::from(
            records
                .iter()
                .map(|r| if r.status == Status::Ok { 1.0 } else { 0.0 })
                .collect::<Vec<f64>>(),
        ),
    );
    Ok(Json(GetRewardResponse {
        scores: rewards.clone(),
        rewards,
        extra_logs,
        statuses: records.iter().map(|r| r.status).collect(),
        errors: records.iter().map(|r| r.error.clone()).collect(),
        item_ids: ids,
    }))
}

/// `POST /v1/rubric/score`.
pub async fn rubric_score(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ScoreRequest>,
) -> ApiResult<Json<ScoreResponseBody>> {
    let item = match (&req.item_id, req.item) {
        (Some(_), Some(_)) => return Err(ApiError::invalid("give `item_id` or `item`, not both")),
        (Some(id), None) => loaded_item(&state, id, "item_id")?,
        (None, Some(v)) => inline_item(v, req.format.unwrap_or(Format::Ares), "item")?,
        (None, None) => {
            return Err(ApiError::invalid(
                "missing `item_id` (an item of --rubrics) or `item` (an inline rubric)",
            ))
        }
    };
    check_batch(&state, req.responses.len(), "responses")?;
    let mut config = state.inner.config.judge.clone();
    if let Some(m) = req.mode {
        config.mode = m;
    }
    if let Some(a) = req.aggregator {
        config.aggregator = a;
    }
    if let Some(h) = req.hard {
        config.hard = h;
    }
    check_criteria(
        &state,
        config.mode,
        &vec![item.criteria.len(); req.responses.len()],
    )?;
    let item_id = item.id.clone();
    let mut seen = HashMap::new();
    let mut responses = Vec::with_capacity(req.responses.len());
    for (i, r) in req.responses.into_iter().enumerate() {
        let (id, text) = match r {
            ScoreResponse::Text(t) => (i.to_string(), t),
            ScoreResponse::Named { id, response } => {
                (id.unwrap_or_else(|| i.to_string()), response)
            }
        };
        if let Some(first) = seen.insert(id.clone(), i) {
            return Err(ApiError::invalid(format!(
                "responses {first} and {i} have the same id `{id}`"
            )));
        }
        responses.push(entry(&item_id, id, text));
    }
    let mode = config.mode;
    let lens: Vec<usize> = responses
        .iter()
        .map(|q| q.response.chars().count())
        .collect();
    let (records, _, template_hash) = judge(&state, vec![item], responses, config).await?;
    let groups = vec![format!("item:{item_id}"); records.len()];
    monitor(&state, "/v1/rubric/score", groups, &lens, &records);
    Ok(Json(ScoreResponseBody {
        item_id,
        rewards: records
            .iter()
            .map(|r| {
                if r.status == Status::Ok {
                    r.reward
                } else {
                    None
                }
            })
            .collect(),
        records,
        template_hash,
        mode,
    }))
}
