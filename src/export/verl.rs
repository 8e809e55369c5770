//! verl's dataset: one parquet file, one row per item, in the columns verl's `RLHFDataset` and
//! reward managers read (verl's `examples/data_preprocess/gsm8k.py` shape):
//!
//! | column | arrow type | value |
//! |---|---|---|
//! | `data_source` | utf8 | `"ares"` (verl's `reward_fn_key`) |
//! | `prompt` | list<struct<role: utf8, content: utf8>> | the item's chat messages |
//! | `ability` | utf8 | the synth domain, or `"general"` |
//! | `reward_model` | struct<style: utf8, ground_truth: utf8> | `style` `"model"`; `ground_truth` the inline ares rubric (id + criteria) as a JSON string, which `examples/verl_ares_reward.py` sends to `ares serve` as the label |
//! | `extra_info` | struct<split: utf8, index: int64, item_id: utf8, question: utf8, reference_answer: utf8?> | for logs |
//!
//! Written through arrow arrays and the `parquet` crate's `ArrowWriter` (snappy), to a temp file
//! renamed into place. [`read`] reads a file back into rows (tests, `ares export` checks).

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{Int64Builder, ListBuilder, StringBuilder, StructBuilder};
use arrow_array::{Array, ArrayRef, Int64Array, ListArray, RecordBatch, StringArray, StructArray};
use arrow_schema::{DataType, Field, Fields, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::export::{domain, inline_rubric, io_err, prompt_messages, ExportError, DATA_SOURCE};
use crate::judge::RubricItem;

/// `reward_model.style`: the reward comes from a model (the rubric judge), not a rule.
pub const STYLE: &str = "model";

/// One row as written (and read back).
#[derive(Debug, Clone, PartialEq)]
pub struct VerlRow {
    pub data_source: String,
    pub prompt: Vec<(String, String)>,
    pub ability: String,
    pub style: String,
    pub ground_truth: String,
    pub split: String,
    pub index: i64,
    pub item_id: String,
    pub question: String,
    pub reference_answer: Option<String>,
}

fn message_fields() -> Fields {
    Fields::from(vec![
        Field::new("role", DataType::Utf8, false),
        Field::new("content", DataType::Utf8, false),
    ])
}

fn reward_fields() -> Fields {
    Fields::from(vec![
        Field::new("style", DataType::Utf8, false),
        Field::new("ground_truth", DataType::Utf8, false),
    ])
}

fn extra_fields() -> Fields {
    Fields::from(vec![
        Field::new("split", DataType::Utf8, false),
        Field::new("index", DataType::Int64, false),
        Field::new("item_id", DataType::Utf8, false),
        Field::new("question", DataType::Utf8, false),
        Field::new("reference_answer", DataType::Utf8, true),
    ])
}

/// The file's schema.
pub fn schema() -> Schema {
    Schema::new(vec![
        Field::new("data_source", DataType::Utf8, false),
        Field::new(
            "prompt",
            DataType::List(Arc::new(Field::new(
                "item",
                DataType::Struct(message_fields()),
                true,
            ))),
            false,
        ),
        Field::new("ability", DataType::Utf8, false),
        Field::new("reward_model", DataType::Struct(reward_fields()), false),
        Field::new("extra_info", DataType::Struct(extra_fields()), false),
    ])
}

/// The rows of `items` (index = position, split "train").
pub fn rows(items: &[RubricItem]) -> Result<Vec<VerlRow>, ExportError> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            Ok(VerlRow {
                data_source: DATA_SOURCE.to_string(),
                prompt: prompt_messages(item),
                ability: domain(item).unwrap_or("general").to_string(),
                style: STYLE.to_string(),
                ground_truth: inline_rubric(item)?,
                split: "train".to_string(),
                index: i as i64,
                item_id: item.id.clone(),
                question: item.question.clone(),
                reference_answer: item.reference_answer.clone(),
            })
        })
        .collect()
}

fn batch(rows: &[VerlRow]) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let schema = Arc::new(schema());
    let mut data_source = StringBuilder::new();
    let mut ability = StringBuilder::new();
    let msg = StructBuilder::from_fields(message_fields(), 0);
    let mut prompt = ListBuilder::new(msg).with_field(Arc::new(Field::new(
        "item",
        DataType::Struct(message_fields()),
        true,
    )));
    let mut reward = StructBuilder::from_fields(reward_fields(), rows.len());
    let mut extra = StructBuilder::from_fields(extra_fields(), rows.len());
    fn string(b: &mut StructBuilder, i: usize) -> &mut StringBuilder {
        b.field_builder::<StringBuilder>(i)
            .expect("field i of this struct is utf8 (schema above)")
    }
    for r in rows {
        data_source.append_value(&r.data_source);
        ability.append_value(&r.ability);
        let m = prompt.values();
        for (role, content) in &r.prompt {
            string(m, 0).append_value(role);
            string(m, 1).append_value(content);
            m.append(true);
        }
        prompt.append(true);
        string(&mut reward, 0).append_value(&r.style);
        string(&mut reward, 1).append_value(&r.ground_truth);
        reward.append(true);
        string(&mut extra, 0).append_value(&r.split);
        extra
            .field_builder::<Int64Builder>(1)
            .expect("extra_info.index is int64 (schema above)")
            .append_value(r.index);
        string(&mut extra, 2).append_value(&r.item_id);
        string(&mut extra, 3).append_value(&r.question);
        string(&mut extra, 4).append_option(r.reference_answer.as_deref());
        extra.append(true);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(data_source.finish()),
        Arc::new(prompt.finish()),
        Arc::new(ability.finish()),
        Arc::new(reward.finish()),
        Arc::new(extra.finish()),
    ];
    RecordBatch::try_new(schema, columns)
}

/// Writes `items` as a verl parquet file at `path`; returns its size in bytes.
pub fn write(path: &Path, items: &[RubricItem]) -> Result<u64, ExportError> {
    let rows = rows(items)?;
    let batch = batch(&rows).map_err(|source| ExportError::Arrow {
        path: path.to_path_buf(),
        source,
    })?;
    let pq = |source| ExportError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut buf = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props)).map_err(pq)?;
    writer.write(&batch).map_err(pq)?;
    writer.close().map_err(pq)?;
    crate::export::write_atomic(path, &buf)
}

fn column<'a, T: 'static>(
    path: &Path,
    array: Option<&'a ArrayRef>,
    name: &str,
) -> Result<&'a T, ExportError> {
    array
        .and_then(|a| a.as_any().downcast_ref::<T>())
        .ok_or_else(|| ExportError::Shape {
            path: path.to_path_buf(),
            reason: format!("column `{name}` missing or of another type"),
        })
}

fn struct_string<'a>(
    path: &Path,
    s: &'a StructArray,
    name: &str,
) -> Result<&'a StringArray, ExportError> {
    column::<StringArray>(path, s.column_by_name(name), name)
}

/// Reads a verl parquet file back into rows.
pub fn read(path: &Path) -> Result<Vec<VerlRow>, ExportError> {
    let file = File::open(path).map_err(io_err(path))?;
    let pq = |source| ExportError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(pq)?
        .build()
        .map_err(pq)?;
    let mut out = Vec::new();
    for b in reader {
        let b = b.map_err(|source| ExportError::Arrow {
            path: path.to_path_buf(),
            source,
        })?;
        let ds = column::<StringArray>(path, b.column_by_name("data_source"), "data_source")?;
        let ability = column::<StringArray>(path, b.column_by_name("ability"), "ability")?;
        let prompt = column::<ListArray>(path, b.column_by_name("prompt"), "prompt")?;
        let reward = column::<StructArray>(path, b.column_by_name("reward_model"), "reward_model")?;
        let extra = column::<StructArray>(path, b.column_by_name("extra_info"), "extra_info")?;
        let style = struct_string(path, reward, "style")?;
        let truth = struct_string(path, reward, "ground_truth")?;
        let split = struct_string(path, extra, "split")?;
        let index = column::<Int64Array>(path, extra.column_by_name("index"), "index")?;
        let item_id = struct_string(path, extra, "item_id")?;
        let question = struct_string(path, extra, "question")?;
        let reference = struct_string(path, extra, "reference_answer")?;
        for i in 0..b.num_rows() {
            let msgs = prompt.value(i);
            let msgs =
                msgs.as_any()
                    .downcast_ref::<StructArray>()
                    .ok_or_else(|| ExportError::Shape {
                        path: path.to_path_buf(),
                        reason: "prompt is not a list of structs".into(),
                    })?;
            let role = struct_string(path, msgs, "role")?;
            let content = struct_string(path, msgs, "content")?;
            out.push(VerlRow {
                data_source: ds.value(i).to_string(),
                prompt: (0..msgs.len())
                    .map(|k| (role.value(k).to_string(), content.value(k).to_string()))
                    .collect(),
                ability: ability.value(i).to_string(),
                style: style.value(i).to_string(),
                ground_truth: truth.value(i).to_string(),
                split: split.value(i).to_string(),
                index: index.value(i),
                item_id: item_id.value(i).to_string(),
                question: question.value(i).to_string(),
                reference_answer: (!reference.is_null(i)).then(|| reference.value(i).to_string()),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::tests::item;
    use crate::judge::formats::{parse_line, Format};
    use crate::judge::Message;

    #[test]
    fn parquet_round_trips_through_the_parquet_crate() -> Result<(), Box<dyn std::error::Error>> {
        let d = tempfile::tempdir()?;
        let mut chat = item("s-2", "Follow-up?", "Medicine & Health");
        chat.messages = vec![
            Message::new("system", "Be brief."),
            Message::new("user", "Follow-up?"),
        ];
        chat.reference_answer = None;
        let items = vec![
            item(
                "s-1",
                "At what temperature does water boil?",
                "Natural Science",
            ),
            chat,
        ];
        let path = d.path().join("train.parquet");
        let bytes = write(&path, &items)?;
        assert_eq!(bytes, std::fs::metadata(&path)?.len());
        let back = read(&path)?;
        assert_eq!(back, rows(&items)?);
        assert_eq!(
            back[0].prompt,
            vec![("user".into(), items[0].question.clone())]
        );
        assert_eq!(back[1].prompt.len(), 2);
        assert_eq!(back[1].reference_answer, None);
        assert_eq!(back[0].ability, "Natural Science");
        // ground_truth is a rubric `ares serve` accepts inline, under the item's id.
        let rubric = parse_line(Format::Ares, &back[1].ground_truth)?;
        assert_eq!(rubric.id, "s-2");
        assert_eq!(rubric.criteria.len(), 3);
        Ok(())
    }

    #[test]
    fn a_file_of_another_shape_is_a_clear_error() -> Result<(), Box<dyn std::error::Error>> {
        let d = tempfile::tempdir()?;
        let path = d.path().join("x.parquet");
        std::fs::write(&path, b"not parquet")?;
        let e = read(&path).expect_err("not parquet");
        assert!(e.to_string().contains("x.parquet"), "{e}");
        Ok(())
    }
}
