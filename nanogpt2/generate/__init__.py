"""Generating text: the decoding loop, how a token is chosen, and `python sample.py`.

    loop.py      prefill, then one cached step per new token, the sliding window, stopping rows
    sampling.py  temperature, top-k, top-p; streaming UTF-8 as tokens arrive
    cli.py       sample.py's command line

From Python: GPT.generate and GPT.generate_tokens (nanogpt2/model.py) call loop.generate_tokens.
"""
