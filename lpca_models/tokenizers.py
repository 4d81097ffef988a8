"""An offline byte-level tokenizer for the tiny random models.

The tiny models must build with no downloaded files, so their tokenizer is made from
code: one token per byte (token id == byte value, so a test can predict ids without
running the tokenizer), plus three special tokens. It is a plain ``tokenizers`` BPE
with no merges behind ``PreTrainedTokenizerFast``, which both transformers and
mlx-lm load from the saved ``tokenizer.json``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # transformers is an optional extra; import it only when a tokenizer is built
    from transformers import PreTrainedTokenizerFast

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
SPECIAL_TOKENS = (BOS, EOS, PAD)
BOS_ID, EOS_ID, PAD_ID = 256, 257, 258
VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)

#: SmolLM2-style turns with the byte tokenizer's specials: BOS opens a turn, EOS closes it,
#: so a generated answer ends with EOS exactly as the real chat model's does.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|bos|>' + message['role'] + '\n' + message['content'] + '<|eos|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|bos|>assistant\n' }}{% endif %}"
)

#: Bumped whenever the recipe changes what the saved tokenizer files contain.
RECIPE_VERSION = 1


def byte_symbols() -> list[str]:
    """The printable stand-in character of each byte 0..255 (GPT-2's byte-to-unicode table).

    ByteLevel pre-tokenization maps every byte to one of these characters; listing them
    in byte order makes token id ``b`` mean byte ``b``.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def byte_tokenizer(*, add_bos: bool = False, model_max_length: int = 2048) -> PreTrainedTokenizerFast:
    """Build the byte-level tokenizer (vocab 259: bytes, then BOS, EOS, PAD).

    ``add_bos`` makes plain encoding start with BOS, as Gemma's tokenizer does; SmolLM2's
    does not, so the two tiny models mirror the two real ones. Chat templates carry their
    own BOS and are tokenized without special tokens, so BOS is never doubled.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {sym: i for i, sym in enumerate(byte_symbols())}
    for i, tok in enumerate(SPECIAL_TOKENS):
        vocab[tok] = 256 + i
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    # use_regex=False: no word splitting is needed when every byte is its own token.
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    if add_bos:
        core.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, BOS_ID)]
        )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        model_max_length=model_max_length,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok
