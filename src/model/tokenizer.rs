//! Tokenizer: a `tokenizers::Tokenizer` built from GGUF metadata (byte-level BPE,
//! `tokenizer.ggml.model = gpt2`, pre-tokenizer chosen by `tokenizer.ggml.pre` as llama.cpp's
//! `llama_vocab` does) or loaded from a `tokenizer.json` next to the model, or our own
//! SentencePiece tokenizer ([`Spm`], `tokenizer.ggml.model = llama`, e.g. Gemma); plus the
//! special-token facts the engine needs (BOS, end-of-generation tokens).
//!
//! Callers see one type whatever the backend; only [`Tokenizer::inner`] exposes the
//! `tokenizers` tokenizer, and only for the byte-level BPE backend.

use crate::error::{Error, Result};
use crate::model::gguf::GgufFile;
use crate::model::spm::Spm;
use crate::TokenId;
use std::collections::HashSet;
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

/// Token texts that end a turn in the chat formats we know (llama.cpp's EOG heuristics).
const EOG_TEXTS: &[&str] = &[
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<end_of_turn>",
    "<|end|>",
    "</s>",
];

/// Which algorithm encodes and decodes.
enum Backend {
    /// Byte-level BPE (GGUF `gpt2`) or any `tokenizer.json`.
    Hf(Box<tokenizers::Tokenizer>),
    /// SentencePiece from GGUF metadata (`llama`).
    Spm(Box<Spm>),
}

pub struct Tokenizer {
    backend: Backend,
    pub bos: Option<TokenId>,
    pub eos: Option<TokenId>,
    /// Whether prompts start with BOS (`tokenizer.ggml.add_bos_token`).
    pub add_bos: bool,
    /// Tokens that end generation.
    pub eog: HashSet<TokenId>,
}

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

/// Regex pre-tokenizers by `tokenizer.ggml.pre` (llama.cpp `llama_vocab::impl::load`).
const REGEX_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const REGEX_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn split(regex: &str) -> Result<PreTokenizerWrapper> {
    Ok(Split::new(
        SplitPattern::Regex(regex.to_string()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(tok_err)?
    .into())
}

fn pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper> {
    // ByteLevel without its own regex maps bytes to the GPT-2 alphabet after our split.
    let bytes_only = ByteLevel::new(false, false, false);
    Ok(match pre {
        // \p{N} split to single digits, then the GPT-2 regex (HF tokenizer.json of SmolLM/StarCoder).
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => {
            Sequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, false, true).into(),
            ])
            .into()
        }
        "llama3" | "llama-bpe" | "smaug-bpe" | "falcon3" | "pixtral" => {
            Sequence::new(vec![split(REGEX_LLAMA3)?, bytes_only.into()]).into()
        }
        "qwen2" | "deepseek-r1-qwen" => {
            Sequence::new(vec![split(REGEX_QWEN2)?, bytes_only.into()]).into()
        }
        // "gpt2", "default" and anything else: the GPT-2 regex.
        _ => ByteLevel::new(false, false, true).into(),
    })
}

impl Tokenizer {
    /// From `tokenizer.json` in the model's directory if present, else from the GGUF metadata.
    pub fn load(g: &GgufFile) -> Result<Self> {
        let json = g.path.parent().map(|d| d.join("tokenizer.json"));
        let backend = match json {
            Some(p) if p.exists() => Backend::Hf(Box::new(Self::from_json_file(&p)?)),
            _ if g.str("tokenizer.ggml.model").ok() == Some("llama") => {
                Backend::Spm(Box::new(Spm::from_gguf(g)?))
            }
            _ => Backend::Hf(Box::new(Self::from_gguf(g)?)),
        };
        let id = |k: &str| g.u64(k).ok().map(|v| v as TokenId);
        let mut eog: HashSet<TokenId> = HashSet::new();
        let eos = id("tokenizer.ggml.eos_token_id");
        eog.extend(eos);
        eog.extend(id("tokenizer.ggml.eot_token_id"));
        for t in EOG_TEXTS {
            if let Some(i) = token_to_id(&backend, t) {
                eog.insert(i);
            }
        }
        Ok(Tokenizer {
            backend,
            bos: id("tokenizer.ggml.bos_token_id"),
            eos,
            add_bos: g.bool_or("tokenizer.ggml.add_bos_token", false),
            eog,
        })
    }

    fn from_json_file(p: &Path) -> Result<tokenizers::Tokenizer> {
        tokenizers::Tokenizer::from_file(p)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", p.display())))
    }

    fn from_gguf(g: &GgufFile) -> Result<tokenizers::Tokenizer> {
        let model = g.str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(Error::Tokenizer(format!(
                "{}: tokenizer model `{model}` is not supported yet (byte-level BPE `gpt2` and SentencePiece `llama` are); put a tokenizer.json next to the model",
                g.path.display()
            )));
        }
        let tokens = g.str_array("tokenizer.ggml.tokens")?;
        let merges: Vec<(String, String)> = g
            .str_array("tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| Error::Tokenizer(format!("invalid merge `{m}`")))
            })
            .collect::<Result<_>>()?;
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(tok_err)?;
        let mut tk = tokenizers::Tokenizer::new(bpe);
        let pre = g.str("tokenizer.ggml.pre").unwrap_or("gpt2");
        tk.with_pre_tokenizer(Some(pre_tokenizer(pre)?));
        tk.with_decoder(Some(ByteLevelDecoder::new(false, false, false)));
        // Control (3) and user-defined (4) tokens are matched whole, as llama.cpp does with
        // parse_special; control tokens are skipped when decoding with skip_special.
        if let Ok(types) = g.i64_array("tokenizer.ggml.token_type") {
            let special: Vec<AddedToken> = types
                .iter()
                .enumerate()
                .filter(|(_, t)| matches!(**t, 3 | 4))
                .filter_map(|(i, t)| {
                    tokens
                        .get(i)
                        .map(|s| AddedToken::from(s.to_string(), *t == 3))
                })
                .collect();
            tk.add_special_tokens(special).map_err(tok_err)?;
        }
        Ok(tk)
    }

    /// Token ids of `text`, special tokens (`<|im_start|>`) parsed, no BOS added.
    pub fn encode(&self, text: &str) -> Result<Vec<TokenId>> {
        match &self.backend {
            Backend::Hf(t) => Ok(t
                .encode_fast(text, false)
                .map_err(tok_err)?
                .get_ids()
                .to_vec()),
            Backend::Spm(s) => s.encode(text),
        }
    }

    /// Like [`encode`](Self::encode) plus BOS when the model wants it.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<TokenId>> {
        let mut ids = Vec::new();
        if self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend(self.encode(text)?);
        Ok(ids)
    }

    /// Text of `ids`; end-of-generation tokens are dropped, other special tokens kept.
    pub fn decode(&self, ids: &[TokenId]) -> Result<String> {
        let kept: Vec<TokenId> = ids
            .iter()
            .copied()
            .filter(|t| !self.eog.contains(t))
            .collect();
        match &self.backend {
            Backend::Hf(t) => t.decode(&kept, false).map_err(tok_err),
            Backend::Spm(s) => Ok(s.decode(&kept)),
        }
    }

    /// The literal text of one token (for log-prob listings).
    pub fn token_text(&self, id: TokenId) -> String {
        match &self.backend {
            Backend::Hf(t) => t.decode(&[id], false).unwrap_or_default(),
            Backend::Spm(s) => s.token_text(id),
        }
    }

    /// Texts of the special control tokens (`<|im_start|>`, `<|im_end|>`, `<end_of_turn>`, ...),
    /// longest first: text containing them is parsed as structure by [`encode`](Self::encode).
    pub fn control_token_texts(&self) -> Vec<String> {
        let mut texts: Vec<String> = match &self.backend {
            Backend::Hf(t) => t
                .get_added_tokens_decoder()
                .values()
                .filter(|a| a.special && !a.content.is_empty())
                .map(|a| a.content.clone())
                .collect(),
            Backend::Spm(s) => s.control_texts(),
        };
        texts.sort_by_key(|t| std::cmp::Reverse(t.len()));
        texts.dedup();
        texts
    }

    pub fn token_to_id(&self, text: &str) -> Option<TokenId> {
        token_to_id(&self.backend, text)
    }

    pub fn vocab_size(&self) -> usize {
        match &self.backend {
            Backend::Hf(t) => t.get_vocab_size(true),
            Backend::Spm(s) => s.vocab_size(),
        }
    }

    /// The wrapped `tokenizers` tokenizer (constrained decoding builds its token trie from it);
    /// `None` for the SentencePiece backend.
    pub fn inner(&self) -> Option<&tokenizers::Tokenizer> {
        match &self.backend {
            Backend::Hf(t) => Some(t),
            Backend::Spm(_) => None,
        }
    }
}

fn token_to_id(backend: &Backend, text: &str) -> Option<TokenId> {
    match backend {
        Backend::Hf(t) => t.token_to_id(text),
        Backend::Spm(s) => s.token_to_id(text),
    }
}
