"""A GGUF file's tokenizer as a Hugging Face fast tokenizer, built with `tokenizers` alone (no torch).

GGUF stores a byte-level BPE vocabulary as its token strings, merges and token types, plus the name
of the pre-tokenizer (`tokenizer.ggml.pre`) that says how text is split before the merges apply. The
splits below are those of the models' own Hugging Face tokenizers (llama.cpp implements the same
ones); the tests compare the result token for token with the real Qwen2.5 tokenizer and with
transformers' own GGUF reader.
"""

from __future__ import annotations

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

# tokenizer.ggml.token_type values (llama.cpp's llama_token_type)
_CONTROL, _USER_DEFINED = 3, 4

_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _regex_then_bytes(pattern: str):
    return pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(pattern), behavior="isolated"), pre_tokenizers.ByteLevel(False, use_regex=False)]
    )


# tokenizer.ggml.pre -> (normalizer, pre-tokenizer), for the pre-tokenizers the embedded models use (others
# fail loudly rather than tokenize subtly wrong). Qwen2's tokenizer composes text to NFC first; SmolLM2's
# (StarCoder-style) splits every digit off before GPT-2's regex.
_PRE = {
    "qwen2": (normalizers.NFC, lambda: _regex_then_bytes(_QWEN2_SPLIT)),
    "smollm": (
        None,
        lambda: pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(False, use_regex=True)]
        ),
    ),
}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table, in which byte-level vocabularies are spelled."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _field(reader, key: str, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def tokenizer_from_gguf(reader):
    """A `PreTrainedTokenizerFast` for the byte-level BPE vocabulary of an open `gguf.GGUFReader`."""
    from transformers import PreTrainedTokenizerFast

    kind, pre = _field(reader, "tokenizer.ggml.model"), _field(reader, "tokenizer.ggml.pre")
    if kind != "gpt2":
        raise ValueError(f"GGUF tokenizer model {kind!r} is not supported: only byte-level BPE ('gpt2')")
    if pre not in _PRE:
        raise ValueError(f"GGUF pre-tokenizer {pre!r} is not supported; known: {sorted(_PRE)}")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type", [])
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges", [])]
    alphabet = bytes_to_unicode()
    spelled = set(alphabet.values())
    vocab = {}
    for i, token in enumerate(tokens):
        if not set(token) <= spelled:  # a token stored as raw text: spell its UTF-8 bytes
            token = "".join(alphabet[b] for b in token.encode("utf-8"))
        vocab.setdefault(token, i)

    tok = Tokenizer(models.BPE(vocab, merges, fuse_unk=False, byte_fallback=False))
    normalizer, pre_tokenizer = _PRE[pre]
    if normalizer is not None:
        tok.normalizer = normalizer()
    tok.pre_tokenizer = pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    # Control tokens (<|im_end|>, ...) are special; user-defined ones (<tool_call>, ...) are kept whole
    # in text but are not special. Both must match before BPE, or they would be cut into pieces.
    tok.add_special_tokens(
        [AddedToken(t, normalized=False, special=True) for t, k in zip(tokens, types) if k == _CONTROL]
    )
    tok.add_tokens(
        [AddedToken(t, normalized=False, special=False) for t, k in zip(tokens, types) if k == _USER_DEFINED]
    )

    def token(key):
        i = _field(reader, f"tokenizer.ggml.{key}")
        return None if i is None else tokens[int(i)]

    arch = _field(reader, "general.architecture")
    out = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=token("bos_token_id"),
        eos_token=token("eos_token_id"),
        unk_token=token("unknown_token_id"),
        pad_token=token("padding_token_id"),
        model_max_length=int(_field(reader, f"{arch}.context_length", 1 << 30)),
        clean_up_tokenization_spaces=False,
    )
    template = _field(reader, "tokenizer.chat_template")
    if template:
        out.chat_template = template
    return out
