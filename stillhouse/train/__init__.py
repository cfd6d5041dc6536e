"""Training students: a LoRA adapter trained here (`lora`), or a provider's fine-tuning job
(`remote`), and the directories they are served from (`export`).

Importing this package must stay cheap: torch, transformers, peft and openai are imported only
inside the functions that train.
"""
