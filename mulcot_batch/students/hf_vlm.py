"""The Hugging Face backend: any image-text-to-text model in a local folder (Qwen2.5-VL first).

The CPU half (`HFVLMPreparer`) builds the two chat prompts of a post (the label prompt ends with
the assistant prefix `"Prediction":`, so the next token is the label; the reasoning prompt is a plain
generation prompt), resizes the image to a fixed square and tokenizes with the model's own
processor. The GPU half (`HFVLMStudent`) reads the three label probabilities from one forward
pass and generates reasoning chains greedily. Batches are left padded so that the last position of
every row is its own next-token position, for the forward pass and for generation alike.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from PIL import Image

from ..prompts import PREDICTION_PREFIX, task_instruction
from .base import Post, PreparedPost, Preparer, Student, Task, label_token_ids
from .loading import quiet_loading

#: Keys of the processor output that run along the token sequence and are padded with the ids.
_TOKEN_KEYS = ("input_ids", "mm_token_type_ids", "token_type_ids")
#: Aspects are short target phrases; a longer one is clipped like a long text.
MAX_ASPECT_CHARS = 200


def _clip(text: str, max_chars: int) -> str:
    """Keep a very long post from blowing up memory and compute: its first `max_chars` characters."""
    return text if len(text) <= max_chars else text[:max_chars]


class HFVLMPreparer(Preparer):
    """Prompt building, image resizing and tokenization for one post; runs in DataLoader workers.

    Holds only the processor (tokenizer + image processor) and plain settings, so it pickles.
    """

    def __init__(self, processor: Any, image_size: int = 280, max_text_chars: int = 2000) -> None:
        self.processor = processor
        self.image_size = image_size
        self.max_text_chars = max_text_chars
        tokenizer = processor.tokenizer
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; HFVLMStudent.from_folder sets one")
        self.pad_token_id: int = tokenizer.pad_token_id
        # Special-token strings typed inside a post (e.g. "<|image_pad|>") would be read as real
        # special tokens and break the image/token count; they are blanked in user text.
        self._special_strings = sorted(
            {t for t in tokenizer.all_special_tokens + list(tokenizer.get_added_vocab()) if len(t) > 1},
            key=len,
            reverse=True,
        )

    def _neutralise(self, text: str) -> str:
        for token in self._special_strings:
            if token in text:
                text = text.replace(token, " ")
        return text

    def messages(self, post: Post, reasoning: bool) -> list[dict[str, Any]]:
        """The chat for one task: the instruction as system message; image, text and aspect as user."""
        text = self._neutralise(_clip(post.text or "", self.max_text_chars))
        aspect = self._neutralise(_clip(post.aspect, MAX_ASPECT_CHARS)) if post.aspect else None
        user_text = f"Text: {text}" + (f"\nAspect: {aspect}" if aspect else "")
        content: list[dict[str, Any]] = [{"type": "image"}] if post.image is not None else []
        content.append({"type": "text", "text": user_text})
        return [
            {"role": "system", "content": [{"type": "text", "text": task_instruction(aspect, reasoning=reasoning)}]},
            {"role": "user", "content": content},
        ]

    def prompt(self, post: Post, task: Task) -> str:
        """The prompt text before tokenization (the label prompt ends with `"Prediction":`)."""
        chat = self.processor.apply_chat_template(
            self.messages(post, reasoning=task == "explain"), tokenize=False, add_generation_prompt=True
        )
        return chat + PREDICTION_PREFIX if task == "classify" else chat

    def _image(self, post: Post) -> Image.Image | None:
        """A fixed square size (the paper uses 280x280) keeps the image-token count per post bounded."""
        if post.image is None:
            return None
        image = post.image if post.image.mode == "RGB" else post.image.convert("RGB")
        return image.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)

    def prepare(self, post: Post) -> PreparedPost:
        """Both prompts tokenized; the image features are stored once and shared by both."""
        image = self._image(post)
        inputs: dict[str, Any] = {"image": {}}
        for task in ("classify", "explain"):
            encoded = self.processor(
                text=[self.prompt(post, task)], images=[image] if image is not None else None, return_tensors="pt"
            )
            inputs[task] = {key: encoded[key][0] for key in _TOKEN_KEYS if key in encoded}
            if image is not None and not inputs["image"]:
                skip = set(_TOKEN_KEYS) | {"attention_mask"}
                inputs["image"] = {key: value for key, value in encoded.items() if key not in skip}
        return PreparedPost(inputs=inputs, length=int(inputs["classify"]["input_ids"].shape[0]))

    def collate(self, posts: list[PreparedPost], task: Task, labels: list[str] | None = None) -> dict[str, Any]:
        """Left-pad the task's token rows; concatenate the image tensors of the posts that have one.

        Chains reason freely here (the paper's prompt), so `labels` is not used.
        """
        rows = [post.inputs[task] for post in posts]
        width = max(int(row["input_ids"].shape[0]) for row in rows)
        batch: dict[str, Any] = {}
        for key in _TOKEN_KEYS:
            if key not in rows[0]:
                continue
            fill = self.pad_token_id if key == "input_ids" else 0
            padded = torch.full((len(rows), width), fill, dtype=rows[0][key].dtype)
            for i, row in enumerate(rows):
                padded[i, width - row[key].shape[0] :] = row[key]
            batch[key] = padded
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            mask[i, width - row["input_ids"].shape[0] :] = 1
        batch["attention_mask"] = mask
        images = [post.inputs["image"] for post in posts if post.inputs["image"]]
        for key in images[0] if images else ():
            batch[key] = torch.cat([image[key] for image in images], dim=0)
        return batch


def load_processor(path: str | Path, trust_remote_code: bool = False) -> Any:
    """`AutoProcessor.from_pretrained`, with a fallback for Qwen-VL-style processors without torchvision.

    transformers 5.x loads the video half of such processors with torchvision and refuses to build
    them without it, although this tool never passes videos. The fallback builds the same processor
    class from its tokenizer and image processor with no video processor.
    """
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer, ProcessorMixin
    import transformers

    try:
        return AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    except ImportError as error:
        if "torchvision" not in str(error).lower():
            raise
        config_file = Path(path) / "processor_config.json"
        class_name = json.loads(config_file.read_text()).get("processor_class") if config_file.exists() else None
        if class_name is None:
            class_name = json.loads((Path(path) / "preprocessor_config.json").read_text()).get("processor_class")
        if class_name is None or not hasattr(transformers, class_name):
            raise
        processor_class = getattr(transformers, class_name)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    image_processor = AutoImageProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    chat_template = _saved_chat_template(Path(path)) or tokenizer.chat_template
    check = ProcessorMixin.check_argument_for_proper_class

    def check_unless_absent(self: Any, name: str, argument: Any) -> Any:
        return None if argument is None else check(self, name, argument)

    with mock.patch.object(processor_class, "check_argument_for_proper_class", check_unless_absent):
        return processor_class(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=None,
            chat_template=chat_template,
        )


def _saved_chat_template(path: Path) -> str | None:
    """The processor-level chat template of a checkpoint folder (newer .jinja, older .json layout)."""
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text()
    if (path / "chat_template.json").is_file():
        return json.loads((path / "chat_template.json").read_text()).get("chat_template")
    return None


def _resolve_dtype(dtype: torch.dtype | str | None, device: str | torch.device) -> torch.dtype:
    """None means bf16 on a GPU that supports it (DESIGN section 3), fp32 elsewhere."""
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if dtype is not None:
        return dtype
    if str(device).startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


class HFVLMStudent(Student):
    """A Hugging Face image-text-to-text model (optionally with a LoRA adapter merged in)."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        name: str,
        weights: str,
        image_size: int = 280,
        max_text_chars: int = 2000,
    ) -> None:
        self.model = model
        self.processor = processor
        self.name = name
        self.weights = weights
        self.label_ids = label_token_ids(processor.tokenizer)
        self._preparer = HFVLMPreparer(processor, image_size=image_size, max_text_chars=max_text_chars)
        self._keeps_last_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._contiguous_head = True
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if head is not None:
            head.register_forward_pre_hook(self._head_input)

    def _head_input(self, _module: Any, args: tuple) -> tuple | None:
        """The last position of a batch, `hidden[:, -1:]`, is a strided view; torch's CPU matmul then
        copies the whole vocabulary projection once per row (1.7 s instead of 12 ms for 16 rows of
        SmolLM2). A contiguous input makes it one small matmul, on every forward pass and prefill."""
        if self._contiguous_head and args and torch.is_tensor(args[0]) and not args[0].is_contiguous():
            return (args[0].contiguous(), *args[1:])
        return None

    @classmethod
    def from_folder(
        cls,
        path: str | Path,
        adapter: str | Path | None = None,
        dtype: torch.dtype | str | None = None,
        device: str | torch.device = "cpu",
        image_size: int = 280,
        max_text_chars: int = 2000,
        trust_remote_code: bool = False,
    ) -> "HFVLMStudent":
        """Load weights and processor from a local folder; never reaches a hub, never unpickles weights."""
        from transformers import AutoModelForImageTextToText

        path = Path(path)
        torch_dtype = _resolve_dtype(dtype, device)
        processor = load_processor(path, trust_remote_code=trust_remote_code)
        tokenizer = processor.tokenizer
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ValueError(f"the tokenizer in {path} has neither a pad nor an eos token")
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForImageTextToText.from_pretrained(
            path, dtype=torch_dtype, local_files_only=True, use_safetensors=True, trust_remote_code=trust_remote_code
        )
        name = path.name
        weights = f"Hugging Face model from {path}"
        if adapter is not None:
            from peft import PeftModel

            # Merged: inference only, and a plain model keeps `generate` and `logits_to_keep` as they are.
            if not (Path(adapter) / "adapter_model.safetensors").is_file():
                raise ValueError(f"adapter folder {adapter} holds no adapter_model.safetensors (pickle weights are refused)")
            with quiet_loading():
                model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
            name = f"{name}+{Path(adapter).name}"
            weights += f" with the LoRA adapter from {adapter} merged in"
        weights += f", in {str(torch_dtype).removeprefix('torch.')}."
        model.to(device).eval()
        return cls(model, processor, name, weights, image_size=image_size, max_text_chars=max_text_chars)

    def preparer(self) -> Preparer:
        return self._preparer

    def to(self, device: Any) -> "HFVLMStudent":
        self.model.to(device)
        return self

    def _on_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Tensors to the model's device; image features (the float tensors) to the model's dtype."""
        device, dtype = self.model.device, self.model.dtype
        moved = {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor):
                value = value.to(device, dtype=dtype if value.is_floating_point() else None, non_blocking=True)
            moved[key] = value
        return moved

    @torch.inference_mode()
    def classify(self, batch: dict[str, Any]) -> np.ndarray:
        """One forward pass; softmax over the three label-token logits at the last position."""
        inputs = self._on_device(batch)
        if self._keeps_last_logits:
            inputs["logits_to_keep"] = 1
        logits = self.model(**inputs, use_cache=False).logits[:, -1, :]
        label_logits = logits[:, self.label_ids].float()
        self.counters["classified"] += len(label_logits)
        return torch.softmax(label_logits, dim=-1).cpu().numpy().astype(np.float32)

    @torch.inference_mode()
    def explain(self, batch: dict[str, Any], max_new_tokens: int) -> list[str]:
        """Plain greedy decoding, new tokens only.

        repetition_penalty is forced to 1.0: transformers applies it to every id in the row, padding
        included, so a checkpoint's penalty (Qwen2.5-VL ships 1.05) would make a chain depend on
        which other posts share its batch.
        """
        inputs = self._on_device(batch)
        output = self.model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            repetition_penalty=1.0,
            pad_token_id=self.processor.tokenizer.pad_token_id,
        )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        self.counters["explained"] += len(new_tokens)
        self.counters["tokens_generated"] += self._generated_count(new_tokens)
        texts = self.processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [text.strip() for text in texts]

    def _generated_count(self, new_tokens: torch.Tensor) -> int:
        """Tokens rows really generated: up to and including the first stop token, not the padding after it."""
        eos = self.model.generation_config.eos_token_id
        stops = set([eos] if isinstance(eos, int) else (eos or [])) | {self.processor.tokenizer.eos_token_id}
        total = 0
        for row in new_tokens.tolist():
            ends = [i for i, token in enumerate(row) if token in stops]
            total += ends[0] + 1 if ends else len(row)
        return total

    def plain_generate(self, batch: dict[str, Any], max_new_tokens: int) -> list[str]:
        """Stock `generate`, without the contiguous-head fix: the benchmark's baseline."""
        self._contiguous_head = False
        try:
            return self.explain(batch, max_new_tokens)
        finally:
            self._contiguous_head = True
