"""Drafts for speculative greedy decoding: the tokens that followed the same few tokens before.

A chain copies a lot: the aspect and words of its post, and the wording every chain of the model
shares ("There is no conflict between the text and the image analyses."). Looking the last few
tokens up in the row's chain so far, in the chains of the job's other rows, then in the row's
prompt, guesses such runs, and the model checks a whole guess in one decoding step. A guess only
decides how many tokens a step may emit, never which ones: verification keeps exactly the tokens
greedy decoding picks one at a time (see `decoding.greedy_decode`).
"""

from __future__ import annotations

NGRAMS = (3, 2)  # context lengths a draft is looked up by, the most telling first (1 guesses badly)
SHARED_LIMIT = 300_000  # entries of the job-wide index before it starts again (~100 MB)


class NgramDrafter:
    """The job-wide index (n-gram -> where it was followed) that the rows being decoded share."""

    def __init__(self, ngrams: tuple[int, ...] = NGRAMS, shared_limit: int = SHARED_LIMIT) -> None:
        self.ngrams = ngrams
        self.shared_limit = shared_limit
        self.shared: dict[tuple[int, ...], tuple[list[int], int]] = {}

    def row(self, prompt_ids: list[int]) -> "DraftRow":
        """A row about to be decoded, its prompt's text tokens indexed for its own drafts only."""
        if len(self.shared) > self.shared_limit:
            self.shared.clear()  # bounded memory on an endless job; drafts are a speed-up, never a result
        return DraftRow(self, prompt_ids)


class DraftRow:
    """One row's tokens (prompt text, then its chain so far) with an index of its own n-grams."""

    def __init__(self, drafter: NgramDrafter, prompt_ids: list[int]) -> None:
        self.drafter = drafter
        self.tokens: list[int] = []
        self.own: dict[tuple[int, ...], int] = {}
        for token in prompt_ids:
            self._add(token, share=False)
        self.prompt_length = len(self.tokens)

    def extend(self, generated: list[int]) -> None:
        """Tokens the model emitted: indexed for this row and shared with the rows decoded after it."""
        for token in generated:
            self._add(token, share=True)

    def _add(self, token: int, share: bool) -> None:
        tokens = self.tokens
        tokens.append(token)
        at = len(tokens) - 1  # where the token that followed each key sits
        for n in self.drafter.ngrams:
            if at >= n:
                key = tuple(tokens[at - n : at])
                self.own[key] = at
                if share:
                    self.drafter.shared[key] = (tokens, at)

    def draft(self, limit: int) -> list[int]:
        """Up to `limit` tokens guessed to come next; empty when nothing seen before fits.

        Each lookup takes the longest n-gram known: in the row's chain so far (a chain caught
        in a loop repeats itself), then in the job's other chains (a chain repeats their wording far
        more often than its post's), then in its prompt. A guess is extended by looking up again
        from its own end, so a draft runs on across the seams between copied pieces.
        """
        guess: list[int] = []
        while len(guess) < limit:
            piece = self._lookup(self.tokens[-max(self.drafter.ngrams) :] + guess, limit - len(guess))
            if not piece:
                break
            guess += piece
        return guess

    def _lookup(self, tail: list[int], limit: int) -> list[int]:
        for n in self.drafter.ngrams:
            if len(tail) < n:
                continue
            key = tuple(tail[-n:])
            at = self.own.get(key)
            if at is not None and at >= self.prompt_length:  # the chain repeating itself
                return self.tokens[at : at + limit]
            hit = self.drafter.shared.get(key)
            if hit is not None:
                tokens, shared_at = hit
                return tokens[shared_at : shared_at + limit]
            if at is not None:
                return self.tokens[at : at + limit]
        return []
