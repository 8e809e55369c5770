//! Generate stage: per (chunk, persona), a self-contained question, a reference answer and 3-12
//! weighted criteria in ONE constrained generation.
//!
//! The schema ([`item_schema`]) is `{"question", "answer", "criteria"}` where `criteria` is
//! exactly the array of `ares rubric`'s schema ([`rubric_schema`]), and the criteria are mapped
//! onto a [`RubricItem`] by the rubric component's own [`to_item`] (ids `c1..cn`, exact
//! duplicates dropped, pitfalls negative, 3-12 checked). A mapping failure is not a generate
//! failure: the item goes on to the rubric-validity filter, which rejects it with that reason.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::judge::rubric_gen::{
    rubric_schema, to_item, GeneratedCriterion, GeneratedRubric, Question, RubricGenError,
};
use crate::judge::RubricItem;

/// Longest question the schema allows, in characters.
pub const QUESTION_MAX_CHARS: usize = 300;
/// Longest reference answer the schema allows, in characters.
pub const ANSWER_MAX_CHARS: usize = 700;

/// Strings start with a letter (a capital for questions and criteria) and never contain
/// braces, brackets, `<>`, `|` or `#`: the 135M default model otherwise starts strings with
/// template debris such as `{{Question}}` that it copies from the prompt's JSON.
pub const PROSE_PATTERN: &str = r"^[A-Z][^{}\[\]<>|#]*$";
pub const ANSWER_PATTERN: &str = r"^[A-Za-z0-9][^{}\[\]<>|#]*$";
/// Fewest criteria the synth schema asks for (`ares rubric` allows 3): room for an essential, an
/// important and a pitfall, and one to spare when the criterion check drops one.
pub const MIN_SYNTH_CRITERIA: usize = 4;
/// Longest criterion the synth schema allows (shorter than `ares rubric`'s 200: one check; at
/// 120, 38 of 365 criteria of the 1.5B model were cut at the limit).
pub const CRITERION_MAX_CHARS: usize = 160;

/// The JSON schema of one generated item: `ares rubric`'s criteria array with [`PROSE_PATTERN`].
pub fn item_schema() -> Value {
    let mut criteria = rubric_schema()["properties"]["criteria"].clone();
    criteria["items"]["properties"]["text"]["maxLength"] = json!(CRITERION_MAX_CHARS);
    criteria["minItems"] = json!(MIN_SYNTH_CRITERIA);
    json!({
        "type": "object",
        "properties": {
            "question": {"type": "string", "minLength": 10, "maxLength": QUESTION_MAX_CHARS, "pattern": PROSE_PATTERN},
            "answer": {"type": "string", "minLength": 1, "maxLength": ANSWER_MAX_CHARS, "pattern": ANSWER_PATTERN},
            "criteria": criteria
        },
        "required": ["question", "answer", "criteria"],
        "additionalProperties": false
    })
}

/// The model's output, parsed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratedItem {
    pub question: String,
    pub answer: String,
    pub criteria: Vec<GeneratedCriterion>,
}

/// Parses the generation; `Err(reason)` when it is not JSON of the schema (cut off at the token
/// limit: the engine's constraint guarantees the shape otherwise).
pub fn parse_generated(text: &str) -> Result<GeneratedItem, String> {
    let mut g: GeneratedItem =
        serde_json::from_str(text.trim()).map_err(|e| format!("output is not item JSON ({e})"))?;
    g.question = g.question.trim().to_string();
    g.answer = g.answer.trim().to_string();
    if g.question.is_empty() || g.answer.is_empty() {
        return Err("empty question or answer".into());
    }
    Ok(g)
}

/// The rubric item of a generation (see the module docs), or the rubric component's reason.
pub fn rubric_item(
    id: &str,
    g: &GeneratedItem,
    template_hash: &str,
    model_sha256: &str,
) -> Result<RubricItem, RubricGenError> {
    let q = Question {
        id: id.to_string(),
        question: g.question.clone(),
        reference_answer: Some(g.answer.clone()),
    };
    to_item(
        &q,
        GeneratedRubric {
            criteria: g.criteria.clone(),
        },
        template_hash,
        model_sha256,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::Category;

    #[test]
    fn schema_reuses_the_rubric_criteria_and_bounds_the_strings() {
        let s = item_schema();
        let mut criteria = rubric_schema()["properties"]["criteria"].clone();
        criteria["items"]["properties"]["text"]["maxLength"] = json!(CRITERION_MAX_CHARS);
        criteria["minItems"] = json!(MIN_SYNTH_CRITERIA);
        assert_eq!(s["properties"]["criteria"], criteria);
        assert_eq!(s["properties"]["question"]["maxLength"], QUESTION_MAX_CHARS);
        assert_eq!(s["required"].as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn a_generation_becomes_a_rubric_item_with_the_answer_as_reference() -> Result<(), String> {
        let text = r#"{"question":" What is 2+2? ","answer":"4.","criteria":[{"text":"Says 4.","category":"essential","weight":10},{"text":"Is short.","category":"optional","weight":1},{"text":"Says 5.","category":"pitfall","weight":6}]}"#;
        let g = parse_generated(text)?;
        assert_eq!(g.question, "What is 2+2?");
        let item = rubric_item("s-1", &g, "h", "m").map_err(|e| e.to_string())?;
        assert_eq!(item.reference_answer.as_deref(), Some("4."));
        assert_eq!(item.criteria[2].category, Category::Pitfall);
        assert_eq!(item.criteria[2].weight, -6.0);
        assert!(parse_generated(r#"{"question":"What is"#).is_err());
        Ok(())
    }
}
