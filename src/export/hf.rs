//! A Hugging Face dataset folder: `train.jsonl` (the items as ares records, provenance included)
//! and `README.md` (the dataset card, whose YAML header's `configs` points the Hub and
//! `datasets.load_dataset` at `train.jsonl` as the train split). Both files are written atomically.

use std::path::Path;

use crate::export::{io_err, ExportError};
use crate::judge::formats::{to_line, Format};
use crate::judge::RubricItem;

/// The data file inside the folder.
pub const DATA_FILE: &str = "train.jsonl";
/// The card inside the folder.
pub const CARD_FILE: &str = "README.md";

/// Writes the folder `dir`; returns the bytes written.
pub fn write(dir: &Path, items: &[RubricItem], card: &str) -> Result<u64, ExportError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut text = String::new();
    for item in items {
        let line = to_line(Format::Ares, item).map_err(|source| ExportError::Item {
            id: item.id.clone(),
            source,
        })?;
        text.push_str(&line);
        text.push('\n');
    }
    let data = crate::export::write_atomic(&dir.join(DATA_FILE), text.as_bytes())?;
    let card = crate::export::write_atomic(&dir.join(CARD_FILE), card.as_bytes())?;
    Ok(data + card)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::tests::item;

    #[test]
    fn folder_reads_back_and_the_card_points_at_the_data() -> Result<(), Box<dyn std::error::Error>>
    {
        let d = tempfile::tempdir()?;
        let items = vec![item("s-1", "Why is the sky blue?", "Natural Science")];
        let s = crate::export::export(crate::export::ExportFormat::Hf, &items, d.path(), None)?;
        assert_eq!(s.rows, 1);
        let back = crate::judge::formats::read_jsonl(&d.path().join(DATA_FILE), Format::Ares)?;
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].as_ref().map_err(|e| e.to_string())?, &items[0]);
        let card = std::fs::read_to_string(d.path().join(CARD_FILE))?;
        assert!(card.starts_with("---\n"), "{card}");
        assert!(card.contains("path: \"train.jsonl\""), "{card}");
        Ok(())
    }
}
