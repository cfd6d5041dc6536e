"""The local model engine: small Hugging Face models run in-process with transformers, with
token logprobs, streaming, LoRA adapters and dynamic micro-batching.

Importing this package must not import torch: `stillhouse models` and the gateway import pieces
of it. Modules that need torch import it inside the functions that use it.
"""
