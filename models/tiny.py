"""Tiny random Janus models, built offline, for tests, demos and the toy world.

The tokenizer is a real byte-level BPE trained here on a small built-in corpus (no
download): the same class and special tokens a published Janus checkpoint ships, at a
vocabulary of ~1000. Shapes: 64 px images, patch 16
(16 understanding tokens), VQ downsampling 16 (16 image tokens, 256 codes). The text model
has head_dim 64, which vLLM's CPU attention kernel accepts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SPECIAL_TOKENS = {
    "bos_token": "<|begin_of_sentence|>",
    "eos_token": "<|end_of_sentence|>",
    "pad_token": "<|pad|>",
}
# Janus's tokenizer exposes these as attributes (tokenizer.image_token, ...); the processor needs them.
EXTRA_SPECIAL_TOKENS = {
    "image_token": "<image_placeholder>",
    "boi_token": "<begin_of_image>",
    "eoi_token": "<end_of_image>",
}
ROLE_TOKENS = ("<|User|>", "<|Assistant|>")

_WORDS = """
a an the this that these those is are was were be of in on at to from with and or not no yes
what which where how many much color colour shape size count number position left right top
bottom middle center centre above below next near far image picture photo scene describe
red green blue yellow orange purple pink brown black white gray grey cyan magenta gold silver
circle square triangle star cross ring disk diamond rectangle oval heart hexagon line dot
one two three four five six seven eight nine ten zero small large big tiny huge bright dark
background foreground object objects shape shapes there it its they them answer question
option options choose choice letter correct best A B C D E (A) (B) (C) (D) A. B. C. D.
cat dog bird car tree house person man woman child sky sea sun moon flower table chair cup
on a white background a red circle two blue squares the answer is
0 1 2 3 4 5 6 7 8 9 + - * / = . , : ; ! ? ( ) [ ] { } < > ' " \\boxed{} <answer> </answer>
think step by step first then finally because so therefore
"""


def build_tiny_tokenizer(vocab_size: int = 1000):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with Janus's special tokens, trained offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [*SPECIAL_TOKENS.values(), *EXTRA_SPECIAL_TOKENS.values(), *ROLE_TOKENS]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = [line.strip() for line in _WORDS.strip().splitlines()]
    tok.train_from_iterator(lines * 4, trainer=trainer)
    # Like Janus-Pro's tokenizer, every encoded text starts with BOS (the unconditional CFG
    # prompt keeps only BOS and <begin_of_image>).
    bos = SPECIAL_TOKENS["bos_token"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.token_to_id(bos))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        **SPECIAL_TOKENS,
        extra_special_tokens=EXTRA_SPECIAL_TOKENS,
        additional_special_tokens=list(ROLE_TOKENS),
        padding_side="left",
        model_max_length=4096,
    )


@dataclass(frozen=True)
class TinyShape:
    """Sizes of a tiny Janus. Defaults: ~4 M parameters, milliseconds per call on CPU."""

    hidden: int = 128
    layers: int = 2
    heads: int = 2
    intermediate: int = 256
    image_size: int = 64
    patch: int = 16
    vision_hidden: int = 64
    vision_layers: int = 2
    vq_codes: int = 256
    vq_base_channels: int = 32


def tiny_janus_config(tokenizer, shape: TinyShape = TinyShape()):
    """A ``JanusConfig`` of the tiny shape whose token ids agree with ``tokenizer``."""
    from transformers import JanusConfig, LlamaConfig
    from transformers.models.janus.configuration_janus import JanusVisionConfig, JanusVQVAEConfig

    vocab = len(tokenizer)
    num_tokens = (shape.image_size // shape.patch) ** 2
    text = LlamaConfig(
        vocab_size=vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.heads,
        head_dim=shape.hidden // shape.heads,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    vision = JanusVisionConfig(
        hidden_size=shape.vision_hidden,
        num_hidden_layers=shape.vision_layers,
        num_attention_heads=2,
        image_size=shape.image_size,
        patch_size=shape.patch,
        projection_dim=shape.hidden,
        num_image_tokens=num_tokens,
    )
    # 5 resolutions = 4 down-samplings by 2: a 64 px image becomes a 4 x 4 grid of codes.
    vq = JanusVQVAEConfig(
        embed_dim=8,
        num_embeddings=shape.vq_codes,
        latent_channels=shape.vq_base_channels,
        base_channels=shape.vq_base_channels,
        channel_multiplier=[1, 1, 2, 2, 4],
        num_res_blocks=1,
        projection_dim=shape.hidden,
        image_token_embed_dim=shape.hidden,
    )
    return JanusConfig(
        text_config=text,
        vision_config=vision,
        vq_config=vq,
        image_token_id=tokenizer.convert_tokens_to_ids(EXTRA_SPECIAL_TOKENS["image_token"]),
        tie_word_embeddings=False,
    )


def tiny_processor(tokenizer, shape: TinyShape = TinyShape()):
    """A ``JanusProcessor`` for the tiny shape (Janus-Pro's [-1, 1] normalisation)."""
    from transformers import JanusProcessor
    from transformers.models.janus.image_processing_janus import JanusImageProcessor

    image_processor = JanusImageProcessor(
        size={"height": shape.image_size, "width": shape.image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return JanusProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        num_image_tokens=(shape.image_size // shape.patch) ** 2,
    )


def build_tiny_janus(seed: int = 0, shape: TinyShape = TinyShape()):
    """(hf_model, processor) with random weights drawn from ``seed``; fp32, CPU, eval mode."""
    from transformers import JanusForConditionalGeneration

    tokenizer = build_tiny_tokenizer()
    config = tiny_janus_config(tokenizer, shape)
    devnull = torch.random.fork_rng(devices=[])
    with devnull:
        torch.manual_seed(seed)
        model = JanusForConditionalGeneration(config)
    model.eval()
    return model, tiny_processor(tokenizer, shape)
