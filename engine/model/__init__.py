"""The model side: base models (``base``), the user's adapter (``adapters``), LoRA fine-tuning (``finetune``,
``dropout``) and the adapter states of a run (``states``).
"""
