"""Our GPT as an lm-evaluation-harness model (EleutherAI's lm-eval, `pip install 'nanogpt2[eval]'`).

    python -m nanogpt2.evaluate.harness --model nanogpt2 --model_args init_from=out-x --tasks hellaswag
    lm_eval --model nanogpt2 --model_args init_from=out-x --tasks hellaswag      # lm-eval with plugin support

lm-eval finds a model by name in its registry. Importing this module registers
`NanoGPT2LM` as "nanogpt2"; the launcher above imports it and then runs lm-eval's
own command line, with every lm-eval option. lm-eval versions that discover
plugins through the "lm_eval.models" entry-point group (its docs/plugin guide)
find it from nanogpt2's package metadata without the launcher. From Python, pass
an instance: `lm_eval.simple_evaluate(model=NanoGPT2LM(init_from="out-x"), tasks=[...])`,
or wrap a model in memory with `NanoGPT2LM(model=gpt)`.

The three requests lm-eval makes, and how each is answered:

* loglikelihood(context, continuation): lm-eval's TemplateLM splits the pair into
  token ids exactly as its Hugging Face backend does (trailing spaces of the
  context move to the continuation; ids of the whole minus ids of the context).
  The continuation is scored with the last block_size tokens before it
  (nanogpt2/evaluate/scoring.py), returning (log-probability, greedy).
* loglikelihood_rolling(text): <|endoftext|> + text, every token scored once in
  windows of block_size (stride = block_size): lm-eval's rolling windows exactly.
* generate_until(context, options): greedy (or sampled, with do_sample) decoding
  with our KV cache (GPT.generate_tokens), one request at a time, stopping at
  <|endoftext|>, at max_gen_toks, or once a stop string appears; the text is cut
  before the first stop string. As lm-eval's HF backend does, the context is cut
  to its last block_size - max_gen_toks tokens, so generation never slides its window.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import lm_eval.models  # noqa: F401  lm-eval's own models: its registry loads them only while it is empty
import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model

from nanogpt2 import fast
from nanogpt2.common.runtime import resolve_runtime, want_compile
from nanogpt2.evaluate.scoring import Scorer
from nanogpt2.loading import load_model
from nanogpt2.model import GPT
from nanogpt2.tokenizer import EOT_ID, EOT_TEXT, get_tokenizer

DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's HF backend's default


@register_model("nanogpt2")
class NanoGPT2LM(TemplateLM):
    """lm-eval's LM interface over a nanogpt2 GPT. --model_args: init_from (anything sample.py takes),
    device, dtype, compile, block_size (smaller only), max_gen_toks; lm-eval's --batch_size is honoured."""

    def __init__(
        self,
        init_from: str | None = None,
        model: GPT | None = None,
        batch_size: int | str = 8,
        device: str | None = None,
        dtype: str = "auto",
        compile: bool | None = False,
        block_size: int | None = None,
        max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
        max_batch_size=None,
        **ignored,
    ) -> None:
        super().__init__()
        if (init_from is None) == (model is None):
            raise ValueError("give exactly one of init_from=PATH_OR_NAME (in --model_args) or model=GPT")
        if device and device.startswith("cuda") and not torch.cuda.is_available():
            # lm-eval's command line passes device="cuda:0" unless told otherwise; its own hf model falls
            # back to the CPU then, and so does this one.
            print(f"nanogpt2: device={device!r} but CUDA is not available here; running on the CPU", file=sys.stderr)
            device = "cpu"
        self.runtime = resolve_runtime(device or "auto", dtype)
        if model is None:
            model = load_model(str(init_from)).model
        self.gpt = self.runtime.inference_model(model)
        if fast.generation_paths_pay(self.runtime.device_type):  # generate_until's decoding (nanogpt2/fast)
            fast.for_cpu_generation(self.gpt)
        compiled = want_compile(compile, self.runtime.device)
        if compiled:
            self.gpt.compile()
        self.tokenizer_ = get_tokenizer()
        # lm-eval passes "auto" or "auto:N" for its batch-size search, which we do not do.
        size = int(batch_size) if str(batch_size).isdigit() else 8
        self.scorer = Scorer(self.gpt, self.runtime, size, block_size, fixed_shapes=compiled)
        self.max_gen_toks = int(max_gen_toks)
        self._device = self.runtime.device

    # -- what TemplateLM needs ------------------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return EOT_ID

    @property
    def max_length(self) -> int:
        return self.scorer.block_size

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.tokenizer_.encode(string)  # GPT-2 adds no BOS token

    def tok_decode(self, tokens: Sequence[int]) -> str:
        return self.tokenizer_.decode(tokens)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """requests: ((context, continuation), context ids, continuation ids) triples."""
        scores = self.scorer.score([(ctx + cont, len(ctx)) for _, ctx, cont in requests], desc="loglikelihood")
        results = []
        for (pair, _, _), score in zip(requests, scores):
            results.append((score.logprob, score.greedy))
            self.cache_hook.add_partial("loglikelihood", pair, results[-1])
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        texts = [request.args[0] for request in requests]
        scores = self.scorer.score([([EOT_ID] + self.tok_encode(text), 1) for text in texts], desc="rolling")
        for text, score in zip(texts, scores):
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), score.logprob)
        return [score.logprob for score in scores]

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        results = []
        for context, options in (request.args for request in requests):
            results.append(self._generate(context, dict(options)))
            self.cache_hook.add_partial("generate_until", (context, options), results[-1])
        return results

    # -- generation -------------------------------------------------------------------------------

    def _generate(self, context: str, options: dict) -> str:
        until = options.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        stops = [s for s in until + [EOT_TEXT] if s]
        max_new = int(options.pop("max_gen_toks", options.pop("max_new_tokens", self.max_gen_toks)))
        sample = bool(options.pop("do_sample", False))
        temperature = float(options.pop("temperature", 1.0 if sample else 0.0)) if sample else 0.0
        room = max(1, self.max_length - max_new)  # context kept, as lm-eval's HF backend keeps it
        ids = (self.tok_encode(context) or [EOT_ID])[-room:]
        x = torch.tensor([ids], dtype=torch.long, device=self.runtime.device)
        new: list[int] = []
        with self.runtime.autocast():
            for token in self.gpt.generate_tokens(
                x,
                max_new,
                temperature=temperature,
                eot_id=EOT_ID,
                top_k=options.get("top_k"),
                top_p=options.get("top_p", 1.0),
            ):
                if int(token[0]) == EOT_ID:
                    break
                new.append(int(token[0]))
                text = self.tok_decode(new)
                if any(stop in text for stop in stops):
                    break
        text = self.tok_decode(new)
        for stop in stops:
            text = text.split(stop)[0]
        return text


def main(argv: Sequence[str] | None = None) -> None:
    """lm-eval's command line, with "nanogpt2" registered (this module's import did it)."""
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":
    main()
