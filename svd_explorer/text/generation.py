"""The original and the compressed model answering the same prompt, token by token, side by side.

Both models get the same prompt (through the chat template when the tokenizer has one), the same
sampling settings and the same random seed, and advance one token each per step with their own
KV cache, so the texts can be streamed together.
"""
from __future__ import annotations

import torch

from ..model.devices import model_device

EXAMPLES = [
    "Explain in two sentences why the sky is blue.",
    "Write a haiku about compressing a neural network.",
    "What is the capital of France, and what is it famous for?",
    "List three uses of the singular value decomposition.",
    "The best way to learn a new language is",
]


def prompt_ids(tokenizer, prompt: str, chat: bool = True) -> torch.Tensor:
    if chat and getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)["input_ids"]
    else:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    if ids.shape[1] == 0:
        raise ValueError("the prompt is empty")
    return ids


class _Stream:
    def __init__(self, model, ids, temperature, seed):
        self.model, self.temperature = model, temperature
        self.device = model_device(model)
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.pending, self.cache, self.tokens, self.finished = ids.to(self.device), None, [], False

    @torch.no_grad()
    def step(self, stop_ids: set[int]) -> None:
        out = self.model(input_ids=self.pending, past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        logits = out.logits[0, -1].float().cpu()
        if self.temperature > 0:
            probs = torch.softmax(logits / self.temperature, dim=-1)
            token = int(torch.multinomial(probs, 1, generator=self.generator))
        else:
            token = int(logits.argmax())
        if token in stop_ids:
            self.finished = True
            return
        self.tokens.append(token)
        self.pending = torch.tensor([[token]], device=self.device)


def side_by_side(models, tokenizer, prompt: str, max_new_tokens: int = 64, temperature: float = 0.0,
                 seed: int = 0, chat: bool = True, should_stop=None):
    """Yield the decoded texts of every model after each step."""
    ids = prompt_ids(tokenizer, prompt, chat)
    stop = {t for t in (tokenizer.eos_token_id, getattr(tokenizer, "pad_token_id", None)) if t is not None}
    if chat and getattr(tokenizer, "chat_template", None):
        end = tokenizer.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tokenizer.get_vocab() else None
        stop |= {end} if end is not None else set()
    streams = [_Stream(m, ids, temperature, seed) for m in models]
    for _ in range(max_new_tokens):
        if should_stop is not None and should_stop():
            break
        for s in streams:
            if not s.finished:
                s.step(stop)
        yield [tokenizer.decode(s.tokens, skip_special_tokens=True) for s in streams]
        if all(s.finished for s in streams):
            break
