"""What the teacher is asked: the paper's five-field chain, for a post or for one aspect of it.

Both backends send the same words: a system instruction that fixes the format (the layout of
`prompts.format_chain`, so `prompts.parse_chain` reads the answers), and a user message with the
image, the text, the aspect and, on a re-ask, the gold label as a hint (MulCoT-RD's CoT enhancement).
"""

from __future__ import annotations

FORMAT = (
    "Reason step by step and answer in exactly this format, one field per paragraph:\n"
    '"Text_analysis": "<the sentiment the text expresses{toward}, and why>"\n\n'
    '"Image_analysis": "<what the image shows and the sentiment it conveys{toward}>"\n\n'
    '"Conflict_resolution": "<how text and image agree or conflict, and how a conflict is resolved>"\n\n'
    '"Final_conclusion": "<the overall sentiment{toward}, integrating text and image>"\n\n'
    '"Prediction": <positive, neutral or negative>'
)
MSC_TEACHER = "You are an expert in multimodal sentiment analysis. Determine the sentiment of this social-media post from its text and image. "
MASC_TEACHER = (
    "You are an expert in multimodal sentiment analysis. Determine the sentiment this social-media post "
    "expresses toward the target aspect '{aspect}', from its text and image. "
)
NO_IMAGE = "(The post has no image.)"


def instruction(aspect: str | None) -> str:
    """The system message: task (post-level or aspect-level) and the exact answer format."""
    toward = f" toward '{aspect}'" if aspect else ""
    head = MASC_TEACHER.format(aspect=aspect) if aspect else MSC_TEACHER
    return head + FORMAT.format(toward=toward)


def hint_text(label: str) -> str:
    """Added on a re-ask: the gold label, and that the chain must arrive at it."""
    return (
        f"Hint: the correct sentiment label is {label}. Write the analysis that leads to it, "
        f'and end with "Prediction": {label}.'
    )


def user_text(text: str, aspect: str | None, has_image: bool, hint: str | None) -> str:
    """The user message's text part (the image, when there is one, goes beside it)."""
    lines = [f"Text: {text}"]
    if aspect:
        lines.append(f"Aspect: {aspect}")
    if not has_image:
        lines.append(NO_IMAGE)
    if hint:
        lines.append(hint_text(hint))
    return "\n".join(lines)
