//! The JSONL exports, one row per item, with the keys each trainer reads by default:
//!
//! - OpenRLHF (`openrlhf/datasets/prompts_dataset.py`): `--input_key` defaults to `input`; the
//!   label key has no default, so the row's rubric is under `label` and the command line passes
//!   `--label_key label`. `input` holds the chat messages (use `--apply_chat_template`), and the
//!   label reaches `ares serve`'s `/get_reward` as `labels[i]` (an inline rubric JSON string).
//! - TRL (`GRPOTrainer`): a conversational `prompt` column; every other column is passed to the
//!   reward functions as a keyword argument, so `item_id` and `rubric` reach
//!   `examples/trl_ares_reward.py`, which sends `rubric` (or `item_id`) as the label.
//!
//! Both rows also carry `item_id`. Files are written atomically.

use std::path::Path;

use serde_json::{json, Value};

use crate::export::{inline_rubric, prompt_messages, ExportError};
use crate::judge::RubricItem;

/// Which trainer's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    OpenRlhf,
    Trl,
}

fn messages(item: &RubricItem) -> Value {
    Value::Array(
        prompt_messages(item)
            .into_iter()
            .map(|(role, content)| json!({"role": role, "content": content}))
            .collect(),
    )
}

/// The row of one item.
pub fn row(item: &RubricItem, shape: Shape) -> Result<Value, ExportError> {
    let rubric = inline_rubric(item)?;
    Ok(match shape {
        Shape::OpenRlhf => json!({
            "input": messages(item),
            "label": rubric,
            "item_id": item.id,
        }),
        Shape::Trl => json!({
            "prompt": messages(item),
            "item_id": item.id,
            "rubric": rubric,
        }),
    })
}

/// Writes `items` as JSONL rows of `shape`; returns the bytes written.
pub fn write(path: &Path, items: &[RubricItem], shape: Shape) -> Result<u64, ExportError> {
    let mut text = String::new();
    for item in items {
        text.push_str(&row(item, shape)?.to_string());
        text.push('\n');
    }
    crate::export::write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::tests::item;
    use crate::judge::formats::{parse_line, Format};

    #[test]
    fn rows_carry_the_default_keys_and_an_inline_rubric() -> Result<(), Box<dyn std::error::Error>>
    {
        let d = tempfile::tempdir()?;
        let items = vec![
            item("s-1", "Why is the sky blue?", "Natural Science"),
            item("s-2", "What is 2+2?", "Math"),
        ];
        for (shape, prompt_key, label_key) in [
            (Shape::OpenRlhf, "input", "label"),
            (Shape::Trl, "prompt", "rubric"),
        ] {
            let path = d.path().join("train.jsonl");
            write(&path, &items, shape)?;
            let text = std::fs::read_to_string(&path)?;
            let lines: Vec<Value> = text
                .lines()
                .map(serde_json::from_str)
                .collect::<Result<_, _>>()?;
            assert_eq!(lines.len(), 2);
            for (l, it) in lines.iter().zip(&items) {
                assert_eq!(l[prompt_key][0]["role"], "user");
                assert_eq!(l[prompt_key][0]["content"], it.question.as_str());
                assert_eq!(l["item_id"], it.id.as_str());
                let rubric = parse_line(
                    Format::Ares,
                    l[label_key].as_str().ok_or("label is a string")?,
                )?;
                assert_eq!(rubric.id, it.id);
                assert_eq!(rubric.criteria, it.criteria);
            }
        }
        Ok(())
    }
}
