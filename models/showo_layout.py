"""Show-o's token layout, its two prompt formats and its omni-attention mask.

Show-o (Xie et al. 2024) is one Phi-1.5 decoder over one vocabulary: the LLM's text tokens
(``llm_vocab_size`` of them), then ``num_new_special_tokens`` added by its universal
prompting (``[PAD]`` and the task / boundary tokens ``<|soi|> <|eoi|> <|sov|> <|eov|> <|t2i|>
<|mmu|> <|t2v|> <|v2v|> <|lvg|>``), then the image tokenizer's ``codebook_size`` codes, then one
``[MASK]`` token, the last id (``vocab_size - 1``). An image code c is token
``llm_vocab_size + num_new_special_tokens + c``. Start and end of text are the LLM's own BOS
and EOS (one token, ``<|endoftext|>``, for Phi-1.5).

Sequences (per row, as Show-o's ``UniversalPrompting`` lays them out):

* generation (t2i): ``[PAD]* <|t2i|> <bos> text <eos> <|soi|> img*K <|eoi|>``; the part up to
  ``<eos>`` is left-padded (or cut, keeping a final ``<eos>``) to ``max_text_len + 1`` tokens,
  so the K image tokens always sit at the same positions; the unconditional prompt of CFG has
  no text (``<|t2i|> <bos> <eos>``). Image logits are read at the image positions themselves
  (mask-token prediction, not next-token prediction);
* understanding (mmu): ``<|mmu|> <|soi|> img*K <|eoi|> <bos> "USER: \\n{question} ASSISTANT:"``
  and the answer after it, next-token predicted.

The omni-attention mask (Show-o section 3.2): text attends causally; the tokens of an image
segment ``<|soi|> ... <|eoi|>`` attend to each other in full (in t2i they also see every text
token before them; in mmu every token sees the whole image prefix up to ``<|eoi|>``); no
token attends to padding, nor to a prompt token the one-step estimator drops
(``models/showo_diffusion.py``). Masks are additive ``[N, 1, L, L]`` floats (0 or the dtype's
minimum, never -inf, so a fully masked padding row stays finite).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SPECIAL_TOKENS = (
    "<|soi|>",
    "<|eoi|>",
    "<|sov|>",
    "<|eov|>",
    "<|t2i|>",
    "<|mmu|>",
    "<|t2v|>",
    "<|v2v|>",
    "<|lvg|>",
)
"""Show-o's added task / boundary tokens, in the order its prompting adds them (after [PAD])."""
PAD_TOKEN = "[PAD]"
MMU_TEMPLATE = "USER: \n{question} ASSISTANT:"
"""Show-o's understanding prompt (its ``inference_mmu.py`` without the CLIP tower)."""


def add_showo_tokens(tokenizer) -> None:
    """Add ``[PAD]`` and ``SPECIAL_TOKENS`` to an LLM tokenizer as Show-o's prompting does
    (a no-op for a tokenizer that has them already)."""
    if tokenizer.pad_token != PAD_TOKEN:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    missing = [t for t in SPECIAL_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens(missing)


@dataclass(frozen=True)
class ShowoVocab:
    """Token ids of one Show-o vocabulary (module docstring)."""

    llm_vocab_size: int
    num_new_special_tokens: int
    codebook_size: int
    vocab_size: int
    bos: int
    eos: int
    pad: int
    soi: int
    eoi: int
    t2i: int
    mmu: int

    @property
    def image_offset(self) -> int:
        """Token id of image code 0."""
        return self.llm_vocab_size + self.num_new_special_tokens

    @property
    def mask(self) -> int:
        """The ``[MASK]`` token: the last id."""
        return self.vocab_size - 1

    @classmethod
    def from_tokenizer(cls, tokenizer, llm_vocab_size, num_new_special_tokens, codebook_size):
        """The vocabulary of a tokenizer that has Show-o's tokens added; a ValueError names
        the mismatch with the checkpoint's config.json."""
        if len(tokenizer) != llm_vocab_size + num_new_special_tokens:
            raise ValueError(
                f"the tokenizer has {len(tokenizer)} tokens after adding Show-o's "
                f"{num_new_special_tokens} ([PAD] + {len(SPECIAL_TOKENS)}); config.json says "
                f"llm_vocab_size={llm_vocab_size} + num_new_special_tokens="
                f"{num_new_special_tokens}: the tokenizer is not the one the checkpoint was "
                "trained with (llm_model_path)"
            )
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|soi|>", "<|eoi|>", "<|t2i|>")}
        mmu = tokenizer.convert_tokens_to_ids("<|mmu|>")
        eos = tokenizer.eos_token_id
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
        return cls(
            llm_vocab_size=llm_vocab_size,
            num_new_special_tokens=num_new_special_tokens,
            codebook_size=codebook_size,
            vocab_size=llm_vocab_size + num_new_special_tokens + codebook_size + 1,
            bos=bos,
            eos=eos,
            pad=tokenizer.pad_token_id,
            soi=ids["<|soi|>"],
            eoi=ids["<|eoi|>"],
            t2i=ids["<|t2i|>"],
            mmu=mmu,
        )


# ---- generation (t2i) sequences -------------------------------------------------------------
def t2i_prefix(text_ids: list[int], vocab: ShowoVocab, max_text_len: int) -> list[int]:
    """``[PAD]* <|t2i|> <bos> text <eos>`` of exactly ``max_text_len + 1`` tokens."""
    body = [vocab.t2i, vocab.bos, *text_ids, vocab.eos]
    width = max_text_len + 1
    if len(body) > width:
        body = [*body[: width - 1], vocab.eos]
    return [vocab.pad] * (width - len(body)) + body


def t2i_sequences(
    text_ids: list[list[int]], image_ids: torch.Tensor, vocab: ShowoVocab, max_text_len: int
) -> torch.Tensor:
    """``[N, max_text_len + K + 3]`` t2i sequences; ``image_ids [N, K]`` are vocabulary ids
    (codes already offset, or ``[MASK]``)."""
    prefix = torch.tensor(
        [t2i_prefix(t, vocab, max_text_len) for t in text_ids], device=image_ids.device
    )  # [N, P]
    N = image_ids.shape[0]
    soi = torch.full((N, 1), vocab.soi, device=image_ids.device)
    eoi = torch.full((N, 1), vocab.eoi, device=image_ids.device)
    return torch.cat([prefix, soi, image_ids, eoi], dim=1)


def image_slice(max_text_len: int, K: int) -> slice:
    """Positions of the K image tokens in a t2i sequence."""
    start = max_text_len + 2  # prefix (max_text_len + 1) and <|soi|>
    return slice(start, start + K)


def t2i_mask(seq: torch.Tensor, vocab: ShowoVocab, keep: torch.Tensor | None, dtype):
    """Omni-attention mask ``[N, 1, L, L]`` of t2i sequences ``seq [N, L]``.

    Text queries attend causally; queries in the image segment (``<|soi|>`` to ``<|eoi|>``)
    attend to every key. No query attends to a padding key or to a key ``keep [N, L]``
    (optional) marks False (a dropped prompt token)."""
    L = seq.shape[1]
    in_image = (torch.cumsum(seq == vocab.soi, 1) - torch.cumsum(seq == vocab.eoi, 1) > 0) | (
        seq == vocab.eoi
    )  # [N, L]: <|soi|> .. <|eoi|> inclusive
    causal = torch.tril(torch.ones(L, L, dtype=torch.bool, device=seq.device))
    allowed = causal[None] | in_image[:, :, None]  # [N, Lq, Lk]
    key_ok = seq != vocab.pad
    if keep is not None:
        key_ok = key_ok & keep
    allowed = allowed & key_ok[:, None, :]
    allowed = allowed | torch.eye(L, dtype=torch.bool, device=seq.device)[None]  # no empty row
    return additive(allowed, dtype)


def additive(allowed: torch.Tensor, dtype) -> torch.Tensor:
    """Bool ``[N, Lq, Lk]`` (True: attend) -> additive float mask ``[N, 1, Lq, Lk]``."""
    out = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return out.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


# ---- understanding (mmu) sequences ----------------------------------------------------------
def mmu_prompt_ids(question_ids: list[int], codes: torch.Tensor, vocab: ShowoVocab) -> list[int]:
    """``<|mmu|> <|soi|> img*K <|eoi|> <bos> question...`` for one image's ``codes [K]``."""
    img = (codes.long() + vocab.image_offset).tolist()
    return [vocab.mmu, vocab.soi, *img, vocab.eoi, vocab.bos, *question_ids]


def mmu_mask(valid: torch.Tensor, eoi_pos: torch.Tensor, dtype) -> torch.Tensor:
    """Omni-attention mask ``[N, 1, L, L]`` of left-padded mmu rows: ``valid [N, L]`` marks real
    tokens, ``eoi_pos [N]`` the position of each row's ``<|eoi|>``. Causal, plus every query
    sees the whole image prefix (up to ``<|eoi|>``); never a padding key."""
    L = valid.shape[1]
    idx = torch.arange(L, device=valid.device)
    causal = idx[None, :, None] >= idx[None, None, :]  # [1, Lq, Lk]
    prefix = idx[None, None, :] <= eoi_pos[:, None, None]  # [N, 1, Lk]
    allowed = (causal | prefix) & valid[:, None, :].bool()
    allowed = allowed | torch.eye(L, dtype=torch.bool, device=valid.device)[None]
    return additive(allowed, dtype)
