"""bpe_fast: exact byte-level BPE tokenizer with a Rust core."""
