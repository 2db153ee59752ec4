"""GLUS (Lin et al., CVPR 2025): global context frames and local query frames in one MLLM that
prompts SAM 2 on every frame. Built so far: the conversation of a call (`conversation`), the
frames a call reads (`frames`), the image tokens (`vision`), the LLM pass with [SEG] prompt tokens
(`mllm`), SAM 2's half on the engine (`hooks`) and the object contrastive loss (`contrastive`)."""
