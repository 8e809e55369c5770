//! SentencePiece-style tokenizer built from GGUF metadata (`tokenizer.ggml.model = llama`): the
//! vocabulary, its scores and token types, as llama.cpp's `llm_tokenizer_spm` uses them.
//!
//! Owns encoding (special-token partition, whitespace escaping, score-ordered pair merging, byte
//! fallback) and decoding of token ids. It must not add BOS/EOS (the caller decides) and must not
//! depend on the `tokenizers` crate. Invariant: `encode` equals llama.cpp's
//! `llama_tokenize(..., add_special = false, parse_special = true)` for SPM vocabularies.

use crate::error::{Error, Result};
use crate::model::gguf::GgufFile;
use crate::TokenId;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// SentencePiece's whitespace marker, U+2581 (llama.cpp `llama_escape_whitespace`).
const SPACE_MARK: &str = "\u{2581}";

/// GGUF token types (llama.cpp `llama_token_type`).
const TYPE_NORMAL: i64 = 1;
const TYPE_UNKNOWN: i64 = 2;
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;
const TYPE_BYTE: i64 = 6;

/// A SentencePiece vocabulary with llama.cpp's encoding rules.
pub struct Spm {
    tokens: Vec<String>,
    scores: Vec<f32>,
    types: Vec<i64>,
    /// Text to id; for duplicate texts the last id wins, as in llama.cpp's `token_to_id`.
    token_to_id: HashMap<String, TokenId>,
    /// `<0xXX>` byte tokens by byte value.
    byte_ids: [Option<TokenId>; 256],
    /// Control, user-defined and unknown tokens, longest text first: matched whole before merging
    /// (llama.cpp `cache_special_tokens` and `tokenizer_st_partition`).
    specials: Vec<TokenId>,
    /// Whether a leading ▁ is added to text at the start or after a special token
    /// (`tokenizer.ggml.add_space_prefix`).
    add_space_prefix: bool,
    unk: Option<TokenId>,
}

/// A candidate merge of two adjacent symbols (llama.cpp `llm_bigram_spm`): higher score first,
/// then the left-most.
struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

/// A run of the input text: a byte range in it, unmerged neighbours linked as in llama.cpp's
/// `llm_symbol`; `len == 0` marks a symbol merged into its left neighbour.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

enum Fragment {
    Text(usize, usize),
    Token(TokenId),
}

impl Spm {
    /// From parallel arrays: token texts, scores (empty = all 0) and GGUF token types (empty =
    /// all normal).
    pub fn new(
        tokens: Vec<String>,
        scores: Vec<f32>,
        types: Vec<i64>,
        add_space_prefix: bool,
    ) -> Result<Self> {
        let n = tokens.len();
        let scores = if scores.is_empty() {
            vec![0.0; n]
        } else {
            scores
        };
        let types = if types.is_empty() {
            vec![TYPE_NORMAL; n]
        } else {
            types
        };
        if scores.len() != n || types.len() != n {
            return Err(Error::Tokenizer(format!(
                "SentencePiece vocabulary: {n} tokens but {} scores and {} types",
                scores.len(),
                types.len()
            )));
        }
        let mut token_to_id = HashMap::with_capacity(n);
        for (i, t) in tokens.iter().enumerate() {
            token_to_id.insert(t.clone(), i as TokenId);
        }
        let mut byte_ids = [None; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            *slot = token_to_id.get(&format!("<0x{b:02X}>")).copied();
        }
        let mut specials: Vec<TokenId> = (0..n)
            .filter(|&i| {
                matches!(types[i], TYPE_CONTROL | TYPE_USER_DEFINED | TYPE_UNKNOWN)
                    && !tokens[i].is_empty()
            })
            .map(|i| i as TokenId)
            .collect();
        // Longest first (llama.cpp sorts by length only; ties by id keep us deterministic).
        specials.sort_by_key(|&i| std::cmp::Reverse(tokens[i as usize].len()));
        let unk = types
            .iter()
            .position(|&t| t == TYPE_UNKNOWN)
            .map(|i| i as TokenId);
        Ok(Spm {
            tokens,
            scores,
            types,
            token_to_id,
            byte_ids,
            specials,
            add_space_prefix,
            unk,
        })
    }

    /// From `tokenizer.ggml.{tokens,scores,token_type,add_space_prefix}`.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let tokens: Vec<String> = g
            .str_array("tokenizer.ggml.tokens")?
            .into_iter()
            .map(str::to_string)
            .collect();
        let scores = g.f32_array("tokenizer.ggml.scores").unwrap_or_default();
        let types = g.i64_array("tokenizer.ggml.token_type").unwrap_or_default();
        // llama.cpp defaults add_space_prefix to true for SPM vocabularies.
        let add_space_prefix = g.bool_or("tokenizer.ggml.add_space_prefix", true);
        let mut spm = Self::new(tokens, scores, types, add_space_prefix)?;
        if let Ok(u) = g.u64("tokenizer.ggml.unknown_token_id") {
            spm.unk = Some(u as TokenId);
        }
        Ok(spm)
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    pub fn token_to_id(&self, text: &str) -> Option<TokenId> {
        self.token_to_id.get(text).copied()
    }

    /// Token ids of `text`, special tokens parsed, no BOS (llama.cpp `tokenize` for SPM).
    pub fn encode(&self, text: &str) -> Result<Vec<TokenId>> {
        let mut out = Vec::new();
        // llama.cpp: "prefix with space if first token", and again after each special token.
        let mut prev_special = true;
        for frag in self.partition(text) {
            match frag {
                Fragment::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Fragment::Text(a, b) => {
                    let mut s = String::with_capacity(b - a + 3);
                    if self.add_space_prefix && prev_special {
                        s.push(' ');
                    }
                    s.push_str(&text[a..b]);
                    let s = s.replace(' ', SPACE_MARK);
                    self.encode_text(&s, &mut out)?;
                    prev_special = false;
                }
            }
        }
        Ok(out)
    }

    /// Split `text` at whole occurrences of special tokens, longest token first
    /// (llama.cpp `tokenizer_st_partition`; no token here has lstrip/rstrip).
    fn partition(&self, text: &str) -> Vec<Fragment> {
        let mut frags = vec![Fragment::Text(0, text.len())];
        if text.is_empty() {
            return Vec::new();
        }
        for &id in &self.specials {
            let tok = self.tokens[id as usize].as_str();
            if !text.contains(tok) {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                let Fragment::Text(a, b) = f else {
                    next.push(f);
                    continue;
                };
                let mut pos = a;
                for (m, _) in text[a..b].match_indices(tok) {
                    let m = a + m;
                    if m > pos {
                        next.push(Fragment::Text(pos, m));
                    }
                    next.push(Fragment::Token(id));
                    pos = m + tok.len();
                }
                if pos < b {
                    next.push(Fragment::Text(pos, b));
                }
            }
            frags = next;
        }
        frags
    }

    /// One escaped text fragment (llama.cpp `llm_tokenizer_spm_session::tokenize`).
    fn encode_text(&self, text: &str, out: &mut Vec<TokenId>) -> Result<()> {
        let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
        for (i, (start, c)) in text.char_indices().enumerate() {
            let len = c.len_utf8();
            symbols.push(Symbol {
                start,
                len,
                prev: i.checked_sub(1),
                next: (start + len < text.len()).then_some(i + 1),
            });
        }
        let mut queue = BinaryHeap::new();
        let mut rev_merge: HashMap<&str, (usize, usize)> = HashMap::new();
        for i in 1..symbols.len() {
            self.try_add(
                text,
                &symbols,
                &mut queue,
                &mut rev_merge,
                Some(i - 1),
                Some(i),
            );
        }
        while let Some(bg) = queue.pop() {
            let (l, r) = (symbols[bg.left], symbols[bg.right]);
            // Stale: one side was merged away or grew since this pair was queued.
            if l.len == 0 || r.len == 0 || l.len + r.len != bg.size {
                continue;
            }
            symbols[bg.left].len += r.len;
            symbols[bg.right].len = 0;
            symbols[bg.left].next = r.next;
            if let Some(n) = r.next {
                symbols[n].prev = Some(bg.left);
            }
            let prev = symbols[bg.left].prev;
            let next = symbols[bg.left].next;
            self.try_add(
                text,
                &symbols,
                &mut queue,
                &mut rev_merge,
                prev,
                Some(bg.left),
            );
            self.try_add(
                text,
                &symbols,
                &mut queue,
                &mut rev_merge,
                Some(bg.left),
                next,
            );
        }
        let mut i = if symbols.is_empty() { None } else { Some(0) };
        while let Some(s) = i {
            self.resegment(text, &symbols, &rev_merge, symbols[s], out)?;
            i = symbols[s].next;
        }
        Ok(())
    }

    /// Queue the merge of `left` and `right` if their concatenation is a token
    /// (llama.cpp `try_add_bigram`).
    fn try_add<'t>(
        &self,
        text: &'t str,
        symbols: &[Symbol],
        queue: &mut BinaryHeap<Bigram>,
        rev_merge: &mut HashMap<&'t str, (usize, usize)>,
        left: Option<usize>,
        right: Option<usize>,
    ) {
        let (Some(left), Some(right)) = (left, right) else {
            return;
        };
        let (l, r) = (symbols[left], symbols[right]);
        let piece = &text[l.start..l.start + l.len + r.len];
        if let Some(&id) = self.token_to_id.get(piece) {
            queue.push(Bigram {
                left,
                right,
                score: self.scores[id as usize],
                size: piece.len(),
            });
            rev_merge.insert(piece, (left, right));
        }
    }

    /// A final symbol to tokens: itself if in the vocabulary, else the pair it was merged from,
    /// else its bytes as `<0xXX>` tokens (llama.cpp `resegment`).
    fn resegment(
        &self,
        text: &str,
        symbols: &[Symbol],
        rev_merge: &HashMap<&str, (usize, usize)>,
        sym: Symbol,
        out: &mut Vec<TokenId>,
    ) -> Result<()> {
        let piece = &text[sym.start..sym.start + sym.len];
        if let Some(&id) = self.token_to_id.get(piece) {
            out.push(id);
            return Ok(());
        }
        if let Some(&(l, r)) = rev_merge.get(piece) {
            self.resegment(text, symbols, rev_merge, symbols[l], out)?;
            return self.resegment(text, symbols, rev_merge, symbols[r], out);
        }
        for &b in piece.as_bytes() {
            match self.byte_ids[b as usize].or(self.unk) {
                Some(id) => out.push(id),
                None => {
                    return Err(Error::Tokenizer(format!(
                    "SentencePiece vocabulary has no byte token <0x{b:02X}> and no unknown token"
                )))
                }
            }
        }
        Ok(())
    }

    /// The bytes one token stands for (llama.cpp `token_to_piece` with special = true): ▁ becomes
    /// a space, byte tokens their byte, control tokens their text, unknown tokens ▅.
    fn piece(&self, id: TokenId) -> Vec<u8> {
        let i = id as usize;
        let (Some(text), Some(&ty)) = (self.tokens.get(i), self.types.get(i)) else {
            return Vec::new();
        };
        match ty {
            TYPE_NORMAL | TYPE_USER_DEFINED => text.replace(SPACE_MARK, " ").into_bytes(),
            TYPE_BYTE => text
                .strip_prefix("<0x")
                .and_then(|h| h.strip_suffix('>'))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .map_or_else(Vec::new, |b| vec![b]),
            TYPE_UNKNOWN => "\u{2585}".as_bytes().to_vec(),
            TYPE_CONTROL => text.as_bytes().to_vec(),
            // Unused and undefined tokens print nothing, as llama.cpp suppresses them.
            _ => Vec::new(),
        }
    }

    /// Texts of the control tokens (type 3), which give text structure (turns, BOS/EOS).
    pub fn control_texts(&self) -> Vec<String> {
        self.specials
            .iter()
            .filter(|&&i| self.types[i as usize] == TYPE_CONTROL)
            .map(|&i| self.tokens[i as usize].clone())
            .collect()
    }

    /// Text of `ids` (llama.cpp `detokenize` without removing specials): with add_space_prefix
    /// the first token loses one leading space.
    pub fn decode(&self, ids: &[TokenId]) -> String {
        let mut bytes = Vec::new();
        for (k, &id) in ids.iter().enumerate() {
            let p = self.piece(id);
            let strip = k == 0 && self.add_space_prefix && p.first() == Some(&b' ');
            bytes.extend_from_slice(if strip { &p[1..] } else { &p });
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The text of one token, no space stripped.
    pub fn token_text(&self, id: TokenId) -> String {
        String::from_utf8_lossy(&self.piece(id)).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vocabulary: specials, bytes, then pieces with scores chosen to test merge order.
    fn tiny(add_space_prefix: bool) -> Result<Spm> {
        let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "<turn>".into()];
        let mut types = vec![TYPE_UNKNOWN, TYPE_CONTROL, TYPE_USER_DEFINED];
        let mut scores = vec![0.0, 0.0, 0.0];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(TYPE_BYTE);
            scores.push(0.0);
        }
        for (t, s) in [
            ("a", -1.0),
            ("b", -1.0),
            ("c", -1.0),
            ("\u{2581}", -1.0),
            ("ab", -5.0),
            ("bc", -2.0),
            ("abc", -3.0),
            ("\u{2581}a", -4.0),
            ("aa", -2.0),
        ] {
            tokens.push(t.into());
            types.push(TYPE_NORMAL);
            scores.push(s);
        }
        Spm::new(tokens, scores, types, add_space_prefix)
    }

    fn ids(spm: &Spm, pieces: &[&str]) -> Vec<TokenId> {
        pieces
            .iter()
            .map(|p| spm.token_to_id(p).expect("piece in tiny vocab"))
            .collect()
    }

    #[test]
    fn merges_highest_score_first() -> Result<()> {
        let spm = tiny(false)?;
        // "bc" (-2) beats "ab" (-5); then "a"+"bc" = "abc" (-3) merges.
        assert_eq!(spm.encode("abc")?, ids(&spm, &["abc"]));
        // "ab" alone: only one candidate.
        assert_eq!(spm.encode("ab")?, ids(&spm, &["ab"]));
        // "abab": "ab" twice, no "abab"; "ba" not in vocab.
        assert_eq!(spm.encode("abab")?, ids(&spm, &["ab", "ab"]));
        Ok(())
    }

    #[test]
    fn ties_merge_left_most_first() -> Result<()> {
        let spm = tiny(false)?;
        // "aaa": "aa" at 0 and at 1 tie; the left-most wins.
        assert_eq!(spm.encode("aaa")?, ids(&spm, &["aa", "a"]));
        Ok(())
    }

    #[test]
    fn spaces_become_the_marker_and_prefix_is_optional() -> Result<()> {
        let with = tiny(true)?;
        assert_eq!(with.encode("a")?, ids(&with, &["\u{2581}a"]));
        assert_eq!(with.decode(&with.encode("a b")?), "a b");
        let without = tiny(false)?;
        assert_eq!(without.encode("a")?, ids(&without, &["a"]));
        assert_eq!(without.encode(" a")?, ids(&without, &["\u{2581}a"]));
        assert_eq!(without.decode(&without.encode(" a")?), " a");
        Ok(())
    }

    #[test]
    fn unknown_characters_fall_back_to_bytes() -> Result<()> {
        let spm = tiny(false)?;
        let got = spm.encode("aé")?;
        assert_eq!(
            got,
            ids(&spm, &["a", "<0xC3>", "<0xA9>"]),
            "é is two byte tokens"
        );
        assert_eq!(spm.decode(&got), "aé");
        Ok(())
    }

    #[test]
    fn special_tokens_are_matched_whole_and_prefix_follows_them() -> Result<()> {
        let spm = tiny(true)?;
        let got = spm.encode("a<turn>b<s>")?;
        assert_eq!(
            got,
            ids(&spm, &["\u{2581}a", "<turn>", "\u{2581}", "b", "<s>"])
        );
        assert_eq!(spm.encode("")?, Vec::<TokenId>::new());
        Ok(())
    }
}
