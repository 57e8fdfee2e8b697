"""A tiny, randomly initialised Qwen2.5-VL saved to a folder, for testing the HF backend offline.

No machine here reaches a model hub, so the tests build the whole checkpoint in code: a config
with a few small layers, a byte-level BPE tokenizer trained on a few sentences (the same
pre-tokenizer as Qwen2, so " positive" after `"Prediction":` tokenizes the way it does in the
real model), the Qwen special tokens, a chat template that inserts the vision tokens, and the
Qwen2-VL image processor. Everything is saved with `save_pretrained` in the layout of a real
checkpoint folder, so the backend loads it through `AutoModelForImageTextToText` and
`AutoProcessor` (or, without torchvision, its fallback) exactly as it would load Qwen2.5-VL-3B.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    GenerationConfig,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Tokenizer,
)

try:  # the torchvision-backed processor when available, else the PIL one (same outputs)
    import torchvision  # noqa: F401
    from transformers import Qwen2VLImageProcessor as ImageProcessor
except ImportError:  # pragma: no cover - depends on the environment
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil as ImageProcessor,
    )

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Qwen2's pre-tokenizer split: a word keeps its leading space (" positive" is one piece).
_QWEN2_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Enough ordinary English that common words become single tokens; the label words are repeated
# so that " positive", " neutral" and " negative" are each one token, as in the real vocabulary.
_CORPUS = [
    "Analyse the sentiment of this social-media post from its text and image.",
    "Classify the sentiment this social-media post expresses toward the target aspect as positive, neutral or negative.",
    "Answer with the fields Text_analysis, Image_analysis, Conflict_resolution, Final_conclusion and Prediction.",
    '"Prediction": positive "Prediction": neutral "Prediction": negative',
    "Text: I love this phone, the camera is great and the battery lasts all day.",
    "Text: The match was a disaster, the team played badly and the fans were angry.",
    "Text: The meeting is at noon in the main hall. Aspect: meeting",
    "The image shows a happy crowd, a sunny beach, a dark street, a red car and a small dog.",
    "We are not sure what the weather will be like tomorrow, but it might rain in the city.",
    "You are a helpful assistant. user assistant system",
] + ["positive neutral negative"] * 20


def _chat_template() -> str:
    """Qwen2-VL's layout: role headers, and `<|vision_start|><|image_pad|><|vision_end|>` per image."""
    return (
        "{% for message in messages %}"
        "<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for content in message['content'] %}"
        "{% if content['type'] == 'image' or 'image' in content %}<|vision_start|><|image_pad|><|vision_end|>"
        "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
        "{% endfor %}{% endif %}"
        "<|im_end|>\n"
        "{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


def build_tokenizer() -> Qwen2Tokenizer:
    """A byte-level BPE with Qwen2's pre-tokenizer, trained in a few milliseconds on `_CORPUS`."""
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS, trainer=trainer)
    model_state = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = model_state["vocab"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model_state["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, chat_template=_chat_template())
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    return tokenizer


def build_tiny_qwen(folder: Path, seed: int = 0) -> Path:
    """Save a tiny random Qwen2.5-VL (model, tokenizer, processor) to `folder`; returns `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}

    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        # wider than the default 0.02, so that the random model has clearly distinct predictions
        "initializer_range": 0.1,
        # head_dim 16: mrope splits its 8 frequencies over (time, height, width)
        "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    vision_config = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": 64,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 56,
        "fullatt_block_indexes": [1],
    }
    config = Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    # As Qwen2.5-VL-3B-Instruct ships it: sampling settings and a repetition penalty, which greedy
    # batch decoding has to override; stop on <|im_end|> or <|endoftext|>.
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
        do_sample=True,
        temperature=0.1,
        top_p=0.001,
        top_k=1,
        repetition_penalty=1.05,
    )
    model.save_pretrained(folder)

    # The processor's parts are saved one by one (tokenizer with its chat template, image processor,
    # processor_config.json naming the class): transformers 5.x cannot build a Qwen2_5_VLProcessor
    # without torchvision (its video half needs it), yet it can save and load these parts.
    tokenizer.save_pretrained(folder)
    ImageProcessor(patch_size=14, temporal_patch_size=2, merge_size=2).save_pretrained(folder)
    (folder / "processor_config.json").write_text(json.dumps({"processor_class": "Qwen2_5_VLProcessor"}) + "\n")
    return folder
