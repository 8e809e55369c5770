//! Chunking: a document's paragraphs -> chunks of about `target_tokens` tokens, cut at paragraph
//! or sentence boundaries, consecutive chunks sharing up to `overlap_tokens` tokens of sentences.
//!
//! Invariants:
//! - a chunk's text is exactly `normalized[span.0..span.1]` (character offsets) of the document's
//!   normalised text, which is its paragraphs joined by `"\n\n"`;
//! - chunks come in document order, each with a stable id: 16 hex digits of the sha256 of
//!   document id, span and text ([`chunk_id`]), which resume uses to skip finished work;
//! - the document is read lazily: the chunker holds one chunk's worth of sentences plus one
//!   paragraph, whatever the document's size;
//! - a sentence longer than the target is cut at word boundaries into pieces that fit.
//!
//! Sentence boundaries are Unicode's (UAX #29, through `unicode-segmentation`).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use unicode_segmentation::UnicodeSegmentation;

use crate::synth::ingest::Document;

/// Chunking settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkConfig {
    /// Tokens per chunk, at most (a single sentence piece never exceeds it either).
    pub target_tokens: usize,
    /// Tokens of trailing sentences repeated at the start of the next chunk, at most.
    pub overlap_tokens: usize,
}

impl Default for ChunkConfig {
    fn default() -> Self {
        ChunkConfig {
            target_tokens: 384,
            overlap_tokens: 48,
        }
    }
}

/// A piece of a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// [`chunk_id`] of doc id, span and text.
    pub id: String,
    pub doc_id: String,
    pub source: String,
    /// 0-based position of the chunk in its document.
    pub index: usize,
    /// Character offsets `[start, end)` in the document's normalised text.
    pub span: (usize, usize),
    pub text: String,
    /// Tokens, as the sum over its sentences (the tokenizer's count of the whole text can differ
    /// by a token or two at sentence joins).
    pub tokens: usize,
    /// Bytes of invalid UTF-8 replaced by U+FFFD in the document up to the end of this chunk.
    #[serde(default)]
    pub invalid_utf8_bytes: usize,
}

/// The stable id of a chunk: 16 hex digits of sha256(doc id, span, text).
pub fn chunk_id(doc_id: &str, span: (usize, usize), text: &str) -> String {
    crate::synth::short_hash(&[
        "chunk",
        doc_id,
        &span.0.to_string(),
        &span.1.to_string(),
        text,
    ])
}

/// A sentence (or a piece of a long one) with the separator before it.
#[derive(Debug, Clone)]
struct Unit {
    /// `"\n\n"` for the first sentence of a paragraph after the first, `""` otherwise.
    gap: &'static str,
    /// The sentence with its trailing spaces, as in the normalised text.
    text: String,
    /// Character offset of `text` in the normalised document.
    start: usize,
    tokens: usize,
}

/// What chunking a document yields.
#[derive(Debug)]
pub enum ChunkEvent {
    Chunk(Chunk),
    /// The document could not be read to its end (the chunks before it were yielded).
    ReadError(String),
}

/// The chunks of one document, produced lazily.
pub struct Chunker<'a> {
    doc: Document,
    config: ChunkConfig,
    count: &'a (dyn Fn(&str) -> usize + Sync),
    /// Units of the chunk being built.
    window: VecDeque<Unit>,
    window_tokens: usize,
    /// Units in `window` that were not in the previous chunk.
    fresh: usize,
    /// Units read from the document but not yet placed.
    queue: VecDeque<Unit>,
    /// Characters of the normalised text so far.
    offset: usize,
    paragraphs_read: usize,
    index: usize,
    done: bool,
}

impl<'a> Chunker<'a> {
    /// `count` gives the tokens of a piece of text (the model tokenizer's count).
    pub fn new(
        doc: Document,
        config: ChunkConfig,
        count: &'a (dyn Fn(&str) -> usize + Sync),
    ) -> Self {
        Chunker {
            doc,
            config: ChunkConfig {
                target_tokens: config.target_tokens.max(8),
                overlap_tokens: config.overlap_tokens.min(config.target_tokens / 2),
            },
            count,
            window: VecDeque::new(),
            window_tokens: 0,
            fresh: 0,
            queue: VecDeque::new(),
            offset: 0,
            paragraphs_read: 0,
            index: 0,
            done: false,
        }
    }

    pub fn doc_id(&self) -> &str {
        &self.doc.id
    }

    pub fn source(&self) -> &str {
        &self.doc.source
    }

    /// Paragraphs read so far (0 after the end: the document had no text).
    pub fn paragraphs_read(&self) -> usize {
        self.paragraphs_read
    }

    /// Bytes of invalid UTF-8 replaced so far.
    pub fn invalid_utf8_bytes(&self) -> usize {
        self.doc.paragraphs.invalid_utf8_bytes()
    }

    /// Reads the next paragraph into `queue` as units; false at the end of the document.
    fn read_paragraph(&mut self) -> Result<bool, String> {
        let para = match self.doc.paragraphs.next_paragraph() {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(false),
            Err(e) => return Err(format!("{}: read error: {e}", self.doc.source)),
        };
        let mut gap = if self.paragraphs_read > 0 { "\n\n" } else { "" };
        self.paragraphs_read += 1;
        self.offset += gap.chars().count();
        for sentence in para.split_sentence_bounds() {
            for piece in self.split_long(sentence) {
                let chars = piece.chars().count();
                let tokens = (self.count)(&piece).max(1);
                self.queue.push_back(Unit {
                    gap,
                    text: piece,
                    start: self.offset,
                    tokens,
                });
                gap = "";
                self.offset += chars;
            }
        }
        Ok(true)
    }

    /// A sentence as pieces of at most the target (cut after whitespace).
    fn split_long(&self, sentence: &str) -> Vec<String> {
        let target = self.config.target_tokens;
        if (self.count)(sentence) <= target {
            return vec![sentence.to_string()];
        }
        let mut pieces = Vec::new();
        let mut current = String::new();
        for word in sentence.split_inclusive(char::is_whitespace) {
            current.push_str(word);
            // Count only every few words: tokenizing each prefix would be quadratic.
            if current.len() > target * 2 && (self.count)(&current) > target * 3 / 4 {
                pieces.push(std::mem::take(&mut current));
            }
        }
        if !current.is_empty() {
            pieces.push(current);
        }
        pieces
    }

    /// Builds the chunk of the current window.
    fn emit(&mut self) -> Chunk {
        let mut text = String::new();
        for (i, u) in self.window.iter().enumerate() {
            if i > 0 {
                text.push_str(u.gap);
            }
            text.push_str(&u.text);
        }
        let trimmed_len = text.trim_end().len();
        text.truncate(trimmed_len);
        let start = self.window.front().map(|u| u.start).unwrap_or(self.offset);
        let span = (start, start + text.chars().count());
        let chunk = Chunk {
            id: chunk_id(&self.doc.id, span, &text),
            doc_id: self.doc.id.clone(),
            source: self.doc.source.clone(),
            index: self.index,
            span,
            text,
            tokens: self.window_tokens,
            invalid_utf8_bytes: self.doc.paragraphs.invalid_utf8_bytes(),
        };
        self.index += 1;
        // Keep trailing sentences up to the overlap for the next chunk.
        let mut keep = 0;
        let mut kept_tokens = 0;
        for u in self.window.iter().rev() {
            if kept_tokens + u.tokens > self.config.overlap_tokens || keep + 1 >= self.window.len()
            {
                break;
            }
            kept_tokens += u.tokens;
            keep += 1;
        }
        let drop = self.window.len() - keep;
        self.window.drain(..drop);
        self.window_tokens = kept_tokens;
        self.fresh = 0;
        chunk
    }
}

impl Iterator for Chunker<'_> {
    type Item = ChunkEvent;

    fn next(&mut self) -> Option<ChunkEvent> {
        loop {
            if self.done {
                return None;
            }
            let Some(unit) = self.queue.pop_front() else {
                match self.read_paragraph() {
                    Ok(true) => continue,
                    Ok(false) => {
                        self.done = true;
                        if self.fresh > 0 {
                            return Some(ChunkEvent::Chunk(self.emit()));
                        }
                        return None;
                    }
                    Err(e) => {
                        self.done = true;
                        return Some(ChunkEvent::ReadError(e));
                    }
                }
            };
            if self.fresh > 0 && self.window_tokens + unit.tokens > self.config.target_tokens {
                let chunk = self.emit();
                // The overlap plus this unit may still be too long: drop overlap until it fits.
                while !self.window.is_empty()
                    && self.window_tokens + unit.tokens > self.config.target_tokens
                {
                    if let Some(u) = self.window.pop_front() {
                        self.window_tokens -= u.tokens;
                    }
                }
                self.window_tokens += unit.tokens;
                self.window.push_back(unit);
                self.fresh = 1;
                return Some(ChunkEvent::Chunk(chunk));
            }
            self.window_tokens += unit.tokens;
            self.window.push_back(unit);
            self.fresh += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::ingest::{Paragraphs, SourceKind};

    fn doc(text: &str) -> Document {
        Document {
            id: "d".into(),
            source: "d.txt".into(),
            kind: SourceKind::Text,
            paragraphs: Paragraphs::from_text(text.to_string(), "d.txt".into()),
        }
    }

    /// One token per word.
    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    fn chunks(text: &str, config: ChunkConfig) -> Vec<Chunk> {
        Chunker::new(doc(text), config, &words)
            .map(|e| match e {
                ChunkEvent::Chunk(c) => c,
                ChunkEvent::ReadError(e) => panic!("{e}"),
            })
            .collect()
    }

    fn normalized(text: &str) -> String {
        let mut p = Paragraphs::from_text(text.to_string(), "x".into());
        let mut out = Vec::new();
        while let Some(x) = p.next_paragraph().expect("memory") {
            out.push(x);
        }
        out.join("\n\n")
    }

    #[test]
    fn spans_index_the_normalised_text_and_chunks_overlap() {
        let text = "One two three. Four five six.\n\nSeven eight nine. Ten eleven twelve.\nThirteen fourteen.\n\n\nFifteen sixteen seventeen eighteen.";
        let config = ChunkConfig {
            target_tokens: 8,
            overlap_tokens: 3,
        };
        let cs = chunks(text, config);
        let norm: Vec<char> = normalized(text).chars().collect();
        assert!(cs.len() >= 3, "{cs:#?}");
        for (i, c) in cs.iter().enumerate() {
            let slice: String = norm[c.span.0..c.span.1].iter().collect();
            assert_eq!(slice, c.text, "chunk {i}");
            assert!(c.tokens <= 8, "{c:?}");
            assert_eq!(c.index, i);
            assert_eq!(c.id, chunk_id("d", c.span, &c.text));
        }
        // Every sentence is in some chunk, and consecutive chunks overlap.
        for s in ["Four five six.", "Thirteen fourteen.", "Fifteen sixteen"] {
            assert!(cs.iter().any(|c| c.text.contains(s)), "{s}");
        }
        assert!(cs.windows(2).any(|w| w[1].span.0 < w[0].span.1), "{cs:#?}");
        // Chunks start at sentence starts.
        assert!(cs.iter().all(|c| c.text.starts_with(char::is_uppercase)));
    }

    #[test]
    fn a_long_sentence_is_cut_into_pieces_that_fit() {
        let long = (0..200)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let cs = chunks(
            &long,
            ChunkConfig {
                target_tokens: 20,
                overlap_tokens: 0,
            },
        );
        assert!(cs.len() >= 10);
        assert!(cs.iter().all(|c| c.tokens <= 20), "{cs:?}");
        let joined: Vec<&str> = cs.iter().flat_map(|c| c.text.split_whitespace()).collect();
        assert_eq!(joined.len(), 200);
    }

    #[test]
    fn an_empty_document_has_no_chunks() {
        assert!(chunks("  \n\n \t\n", ChunkConfig::default()).is_empty());
    }
}
