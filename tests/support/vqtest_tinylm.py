"""A small randomly initialised Llama-architecture causal LM with a locally trained tokenizer (no downloads)."""

from __future__ import annotations

from pathlib import Path

TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "a vector quantised search engine compresses model weights",
    "lattice codes and trellis codes approach the rate distortion bound",
    "debian packages ship libraries, tools and documentation",
    "calibration texts run through the model to collect statistics",
    "fine tuning after rounding adjusts scales and codes",
    "hidden states flow through every transformer block",
    "small models make fast and honest tests",
    "the embedding table maps token ids to vectors",
    "a tied output head shares the embedding table",
    "logits of the compressed model follow the float model",
    "random initialisation gives gaussian weights",
]


def make_tiny_llama(folder: Path, *, tie: bool = True, seed: int = 0, hidden: int = 64, layers: int = 2) -> Path:
    """Save a random Llama (``tie``: tied input/output embeddings) and its BPE tokenizer into ``folder``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TEXTS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")
    fast.save_pretrained(str(folder))
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=tie, bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                      pad_token_id=fast.pad_token_id)
    model = LlamaForCausalLM(cfg).eval()
    model.save_pretrained(str(folder))
    return folder
