"""UCLR (WWW 2024): global pretraining, user-aware contrastive autoencoder, per-domain LoRA."""
