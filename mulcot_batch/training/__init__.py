"""The Teacher-Assistant-Student training pipeline for the `nano` family (MulCoT-RD, section 2)."""
