//! Constrained generation through llguidance: a request may carry a JSON schema, a regular
//! expression or a Lark grammar, and every token it generates is sampled under the grammar's
//! allowed-token mask, so the output is guaranteed to match.
//!
//! Three layers:
//! - [`Constraint`]: what a request asks for (serde-friendly, part of [`Request`](super::Request)).
//! - [`ConstraintCompiler`]: per model, built once and shared (the token trie over the whole
//!   vocabulary and llguidance's `ParserFactory`; about 120 ms for the default model). Its
//!   token environment ([`TokenEnv`]) tokenizes with our own `tokenizers` 0.23 tokenizer, so forced
//!   tokens are canonical (toktrie_hf_tokenizers pins tokenizers 0.21 and cannot take it).
//! - [`ConstraintState`]: per sequence, one llguidance `Matcher`. The engine asks it for the mask
//!   ([`ConstraintState::prepare_mask`], on a helper thread during the forward when masks are
//!   costly), applies the mask to a copy of the logits ([`ConstraintState::mask_logits`]), commits
//!   the sampled token ([`ConstraintState::commit`]) and fast-forwards the tokens the grammar then
//!   forces (`":"`, key names: [`ConstraintState::take_forced`]).
//!
//! Invariants: the trie is padded to the logits width, so a mask covers every logit and padding
//! ids are never allowed; end-of-generation tokens are special in the trie (never produced as text)
//! and are the grammar's EOS set, allowed exactly where the grammar may end; log-probs are taken by
//! the caller from the raw logits, never from the masked copy. llguidance never prints here (the
//! factory is quiet); its errors become [`Error`] values naming the request.

use crate::error::{Error, Result};
use crate::model::tokenizer::Tokenizer;
use crate::TokenId;
use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokenizers::DecoderWrapper;
use toktrie::{SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenizerEnv};

/// What the output must match. Serialized externally tagged: `{"json_schema": {...}}`,
/// `{"regex": "(Yes|No)"}`, `{"lark": "start: ..."}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Constraint {
    /// A JSON schema (llguidance's Draft 2020-12 subset; properties come out in schema order).
    /// Unless the schema sets `"x-guidance"` options itself, the JSON is compact (no optional
    /// whitespace): small models otherwise run on with spaces and newlines.
    JsonSchema(serde_json::Value),
    /// A regular expression (Rust `regex` syntax) the whole output must match.
    Regex(String),
    /// A grammar in llguidance's Lark dialect.
    Lark(String),
}

impl Constraint {
    /// llguidance's grammar for this constraint.
    pub fn to_grammar(&self) -> TopLevelGrammar {
        match self {
            Constraint::JsonSchema(schema) => {
                TopLevelGrammar::from_json_schema(compact_json_schema(schema.clone()))
            }
            Constraint::Regex(rx) => TopLevelGrammar::from_regex(rx),
            Constraint::Lark(g) => TopLevelGrammar::from_lark(g.clone()),
        }
    }
}

/// Turn off llguidance's flexible JSON whitespace unless the schema chooses its own options
/// (`x-guidance`, see llguidance docs/json_schema.md).
fn compact_json_schema(mut schema: serde_json::Value) -> serde_json::Value {
    if let Some(obj) = schema.as_object_mut() {
        obj.entry("x-guidance")
            .or_insert_with(|| serde_json::json!({ "whitespace_flexible": false }));
    }
    schema
}

/// Per model: the token trie and llguidance's parser factory. Cheap to share (`Arc` inside).
#[derive(Clone)]
pub struct ConstraintCompiler {
    factory: Arc<ParserFactory>,
}

impl ConstraintCompiler {
    /// Build the token environment for `tok` with a trie of `n_logits` entries (the model's logits
    /// width; ids past the tokenizer's vocabulary become never-allowed placeholders).
    pub fn new(tok: &Tokenizer, n_logits: usize) -> Result<Self> {
        let env = TokenEnv::new(tok, n_logits)?;
        let env: TokEnv = Arc::new(env);
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| {
            Error::Tokenizer(format!(
                "constrained decoding: building the parser factory: {e}"
            ))
        })?;
        factory.quiet();
        Ok(ConstraintCompiler {
            factory: Arc::new(factory),
        })
    }

    /// Compile `c` for one sequence of request `request` and compute its first mask (so a grammar
    /// that allows nothing is an error here, not a stuck sequence).
    pub fn compile(&self, c: &Constraint, request: &str) -> Result<ConstraintState> {
        let invalid = |reason: String| Error::InvalidConstraint {
            request: request.to_string(),
            reason,
        };
        let parser = self
            .factory
            .create_parser(c.to_grammar())
            .map_err(|e| invalid(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(invalid(e));
        }
        let mut state = ConstraintState {
            matcher,
            mask: None,
            last_mask_seconds: 0.0,
            request: request.to_string(),
        };
        state.prepare_mask();
        match &state.mask {
            Some(Ok(m)) if m.is_zero() => Err(invalid("the grammar allows no token".into())),
            Some(Err(e)) => Err(invalid(e.clone())),
            _ => Ok(state),
        }
    }
}

/// Per sequence: the grammar's parse state and the mask for the next token, once computed.
pub struct ConstraintState {
    matcher: Matcher,
    /// Mask for the next sampled token; `None` until computed, cleared by every commit.
    mask: Option<std::result::Result<SimpleVob, String>>,
    /// Time the last mask took (the engine decides from it whether to overlap masks with the
    /// forward).
    last_mask_seconds: f64,
    request: String,
}

impl ConstraintState {
    fn failed(&self, reason: String) -> Error {
        Error::ConstraintFailed {
            request: self.request.clone(),
            reason,
        }
    }

    /// Compute the mask for the next token unless it is already there. Runs on any thread (the
    /// engine may call it on a helper thread while the forward that yields the logits runs).
    pub fn prepare_mask(&mut self) {
        if self.mask.is_none() {
            let t0 = Instant::now();
            self.mask = Some(self.matcher.compute_mask().map_err(|e| e.to_string()));
            self.last_mask_seconds = t0.elapsed().as_secs_f64();
        }
    }

    /// How long the last mask took to compute.
    pub fn last_mask_seconds(&self) -> f64 {
        self.last_mask_seconds
    }

    /// Set the logits of disallowed tokens to -inf. `logits`: (vocab,), a copy of the model's row.
    pub fn mask_logits(&mut self, logits: &mut [f32]) -> Result<()> {
        self.prepare_mask();
        match &self.mask {
            Some(Ok(m)) if m.is_zero() => Err(self.failed("the grammar allows no token".into())),
            Some(Ok(m)) => {
                apply_mask(m.as_slice(), logits);
                Ok(())
            }
            Some(Err(e)) => Err(self.failed(e.clone())),
            None => Err(self.failed("mask missing after computing it".into())),
        }
    }

    /// Feed the sampled token; true when the grammar is complete (nothing may follow).
    pub fn commit(&mut self, id: TokenId) -> Result<bool> {
        self.mask = None;
        self.matcher
            .consume_token(id)
            .map_err(|e| self.failed(e.to_string()))?;
        Ok(self.matcher.is_stopped())
    }

    /// Tokens the grammar forces next (at most `max`), already committed; and whether the grammar
    /// is complete after them. Empty when nothing is forced.
    pub fn take_forced(&mut self, max: usize) -> Result<(Vec<TokenId>, bool)> {
        let mut ff = self.matcher.compute_ff_tokens();
        if let Some(e) = self.matcher.get_error() {
            return Err(self.failed(e));
        }
        ff.truncate(max);
        if ff.is_empty() {
            return Ok((ff, self.matcher.is_stopped()));
        }
        self.mask = None;
        self.matcher
            .consume_tokens(&ff)
            .map_err(|e| self.failed(e.to_string()))?;
        Ok((ff, self.matcher.is_stopped()))
    }
}

/// Set `logits[i]` to -inf where bit i of the mask words is clear (bit i % 32 of word i / 32, as
/// toktrie's `SimpleVob` stores it). Words cover at least `logits.len()` bits.
pub fn apply_mask(words: &[u32], logits: &mut [f32]) {
    for (chunk, &w) in logits.chunks_mut(32).zip(words) {
        if w == u32::MAX {
            continue;
        }
        if w == 0 {
            chunk.fill(f32::NEG_INFINITY);
            continue;
        }
        for (bit, l) in chunk.iter_mut().enumerate() {
            if w & (1 << bit) == 0 {
                *l = f32::NEG_INFINITY;
            }
        }
    }
    // Words missing at the end (a shorter mask) allow nothing there.
    let covered = words.len() * 32;
    if logits.len() > covered {
        logits[covered..].fill(f32::NEG_INFINITY);
    }
}

/// llguidance's view of our tokenizer: a trie of every token's bytes plus canonical tokenization
/// (our own `tokenizers` tokenizer, special tokens matched as text) for forced tokens.
pub struct TokenEnv {
    trie: TokTrie,
    /// A copy of the model's tokenizer that encodes special-token text as ordinary text.
    tokenizer: tokenizers::Tokenizer,
    canonical: bool,
}

impl TokenEnv {
    pub fn new(tok: &Tokenizer, n_logits: usize) -> Result<Self> {
        let err = |reason: String| Error::Tokenizer(format!("constrained decoding: {reason}"));
        let inner = tok
            .inner()
            .ok_or_else(|| err("constrained generation needs a byte-level BPE tokenizer".into()))?;
        let kind = decoder_kind(inner.get_decoder()).ok_or_else(|| {
            err("the tokenizer's decoder is neither ByteLevel nor ByteFallback".into())
        })?;
        let n_vocab = inner.get_vocab_size(true);
        let specials: HashMap<u32, String> = inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, t)| (id, t.content))
            .collect();
        let table = byte_level_table();
        let mut words = Vec::with_capacity(n_logits.max(n_vocab));
        for id in 0..n_vocab as u32 {
            let Some(name) = inner.id_to_token(id) else {
                words.push(Vec::new());
                continue;
            };
            let special = specials.contains_key(&id) || tok.eog.contains(&id);
            words.push(token_bytes(&name, special, kind, &table));
        }
        if n_logits < words.len() {
            // Only ids below the logits width can ever be sampled; drop the rest.
            tracing::warn!(
                "tokenizer has {} tokens but the model {} logits; ignoring the extra tokens",
                words.len(),
                n_logits
            );
            words.truncate(n_logits);
        }
        pad_words(&mut words, n_logits);
        let eos: Vec<TokenId> = {
            let mut e: Vec<TokenId> = tok
                .eog
                .iter()
                .copied()
                .filter(|&t| (t as usize) < n_logits)
                .collect();
            e.sort_unstable();
            // The primary EOS first (llguidance reports it as the trie's EOS token).
            if let Some(p) = tok.eos.and_then(|p| e.iter().position(|&t| t == p)) {
                let primary = e.remove(p);
                e.insert(0, primary);
            }
            e
        };
        let Some(&first_eos) = eos.first() else {
            return Err(err("the model has no end-of-generation token".into()));
        };
        let info = TokRxInfo::new(n_logits as u32, first_eos);
        // TokTrie::from asserts its invariants; a panic there is a tokenizer we cannot serve.
        let trie = std::panic::catch_unwind(|| TokTrie::from(&info, &words).with_eos_tokens(&eos))
            .map_err(|_| err("building the token trie failed".into()))?;
        let mut tokenizer = inner.clone();
        tokenizer.set_encode_special_tokens(true);
        Ok(TokenEnv {
            trie,
            tokenizer,
            canonical: kind == DecoderKind::ByteLevel,
        })
    }
}

impl TokenizerEnv for TokenEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie
            .tokenize_with_greedy_fallback(s, |s| match self.tokenizer.encode_fast(s, false) {
                Ok(e) => e.get_ids().to_vec(),
                Err(_) => self.trie.greedy_tokenize(s.as_bytes()),
            })
    }

    fn tokenize_is_canonical(&self) -> bool {
        self.canonical
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecoderKind {
    /// GPT-2 byte-to-unicode alphabet (our GGUF `gpt2` tokenizers).
    ByteLevel,
    /// SentencePiece-style: `<0xNN>` byte tokens, `space` stands for ' '.
    ByteFallback { space: char },
}

fn decoder_kind(d: Option<&DecoderWrapper>) -> Option<DecoderKind> {
    fn walk(d: &DecoderWrapper, byte_level: &mut bool, fallback: &mut bool, space: &mut char) {
        match d {
            DecoderWrapper::ByteLevel(_) => *byte_level = true,
            DecoderWrapper::ByteFallback(_) => *fallback = true,
            DecoderWrapper::Replace(r) => {
                // The pattern is private; read it from the serialized form, as
                // toktrie_hf_tokenizers does.
                if let Ok(v) = serde_json::to_value(r) {
                    let to_space = v["content"].as_str() == Some(" ");
                    if let (true, Some(p)) = (to_space, v["pattern"]["String"].as_str()) {
                        let mut cs = p.chars();
                        if let (Some(c), None) = (cs.next(), cs.next()) {
                            *space = c;
                        }
                    }
                }
            }
            DecoderWrapper::Sequence(s) => {
                for d in s.get_decoders() {
                    walk(d, byte_level, fallback, space);
                }
            }
            _ => {}
        }
    }
    let (mut byte_level, mut fallback, mut space) = (false, false, ' ');
    walk(d?, &mut byte_level, &mut fallback, &mut space);
    if byte_level {
        Some(DecoderKind::ByteLevel)
    } else if fallback {
        Some(DecoderKind::ByteFallback { space })
    } else {
        None
    }
}

/// GPT-2's byte-to-unicode table, inverted and indexed by char code: printable Latin-1 bytes map
/// to themselves, the other 68 bytes to U+0100.. in byte order (`bytes_to_unicode` in OpenAI's
/// gpt-2 `encoder.py`).
fn byte_level_table() -> Vec<Option<u8>> {
    let self_mapped = |b: u8| matches!(b, 0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff);
    let mut table = vec![None; 0x100 + 68];
    let mut next = 0x100;
    for b in 0..=255u8 {
        if self_mapped(b) {
            table[b as usize] = Some(b);
        } else {
            table[next] = Some(b);
            next += 1;
        }
    }
    table
}

/// The bytes a token stands for in the trie. Special tokens get toktrie's marker byte (0xff) in
/// front, so grammars never produce them as text. A token that cannot be mapped gets no bytes and
/// is never allowed.
fn token_bytes(name: &str, special: bool, kind: DecoderKind, table: &[Option<u8>]) -> Vec<u8> {
    if special {
        let mut b = vec![TokTrie::SPECIAL_TOKEN_MARKER];
        b.extend_from_slice(name.as_bytes());
        return b;
    }
    match kind {
        DecoderKind::ByteLevel => name
            .chars()
            .map(|c| table.get(c as usize).copied().flatten())
            .collect::<Option<Vec<u8>>>()
            .unwrap_or_default(),
        DecoderKind::ByteFallback { space } => {
            let hex = name
                .strip_prefix("<0x")
                .and_then(|h| h.strip_suffix('>'))
                .filter(|h| h.len() == 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(b) => vec![b],
                None => name.replace(space, " ").into_bytes(),
            }
        }
    }
}

/// Pad `words` to `n` entries with unique never-produced specials (`\xff<[id]>`), as
/// toktrie_hf_tokenizers' `ByteTokenizerEnv::new` does for logits wider than the vocabulary.
fn pad_words(words: &mut Vec<Vec<u8>>, n: usize) {
    while words.len() < n {
        let mut b = vec![TokTrie::SPECIAL_TOKEN_MARKER];
        b.extend_from_slice(format!("<[{}]>", words.len()).as_bytes());
        words.push(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_table_is_gpt2s() {
        let t = byte_level_table();
        let b = |c: char| t.get(c as usize).copied().flatten();
        assert_eq!(b('a'), Some(b'a'));
        assert_eq!(b('Ġ'), Some(b' ')); // U+0120
        assert_eq!(b('Ċ'), Some(b'\n')); // U+010A
        assert_eq!(b('Ā'), Some(0)); // U+0100
        assert_eq!(b('\u{ff}'), Some(0xff));
        assert_eq!(b(' '), None);
        assert_eq!(b('€'), None);
        // Every byte has exactly one char.
        let mut seen = [false; 256];
        for v in t.iter().flatten() {
            assert!(!seen[*v as usize], "byte {v} mapped twice");
            seen[*v as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn token_bytes_per_decoder() {
        let t = byte_level_table();
        let bl = DecoderKind::ByteLevel;
        assert_eq!(token_bytes("Ġyes", false, bl, &t), b" yes");
        assert_eq!(token_bytes("<|im_end|>", true, bl, &t), b"\xff<|im_end|>");
        assert_eq!(token_bytes("a b", false, bl, &t), b""); // a raw space is not in the alphabet
        let bf = DecoderKind::ByteFallback { space: '▁' };
        assert_eq!(token_bytes("<0x0A>", false, bf, &t), b"\n");
        assert_eq!(token_bytes("▁yes", false, bf, &t), b" yes");
    }

    #[test]
    fn padding_is_unique_specials() {
        let mut w = vec![b"a".to_vec()];
        pad_words(&mut w, 3);
        assert_eq!(w[1], b"\xff<[1]>");
        assert_eq!(w[2], b"\xff<[2]>");
    }

    #[test]
    fn mask_sets_disallowed_to_minus_infinity() {
        let mut logits: Vec<f32> = (0..70).map(|i| i as f32).collect();
        // Word 0 allows ids 1 and 31; word 1 allows all of 32..64; word 2 allows id 65.
        let words = [(1u32 << 1) | (1 << 31), u32::MAX, 1 << 1];
        apply_mask(&words, &mut logits);
        let allowed: Vec<usize> = (0..70).filter(|&i| logits[i].is_finite()).collect();
        let mut want = vec![1, 31];
        want.extend(32..64);
        want.push(65);
        assert_eq!(allowed, want);
        assert_eq!(logits[65], 65.0);
        // A mask shorter than the logits allows nothing past its end.
        let mut l = vec![0.0f32; 40];
        apply_mask(&[u32::MAX], &mut l);
        assert!(l[..32].iter().all(|x| x.is_finite()));
        assert!(l[32..].iter().all(|x| *x == f32::NEG_INFINITY));
    }

    #[test]
    fn json_schema_defaults_to_compact_whitespace() {
        let s = compact_json_schema(serde_json::json!({"type": "object"}));
        assert_eq!(s["x-guidance"]["whitespace_flexible"], false);
        let own =
            serde_json::json!({"type": "object", "x-guidance": {"whitespace_flexible": true}});
        assert_eq!(compact_json_schema(own.clone()), own);
    }

    #[test]
    fn constraint_serde_is_externally_tagged() -> std::result::Result<(), serde_json::Error> {
        let c: Constraint = serde_json::from_str(r#"{"regex": "(Yes|No)"}"#)?;
        assert_eq!(c, Constraint::Regex("(Yes|No)".into()));
        let j = serde_json::to_value(Constraint::JsonSchema(
            serde_json::json!({"type": "string"}),
        ))?;
        assert_eq!(j, serde_json::json!({"json_schema": {"type": "string"}}));
        Ok(())
    }
}
