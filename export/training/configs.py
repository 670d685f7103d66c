"""Architecture of the demo model: small configs of the real Stable Diffusion family.

Why these sizes: the model must learn the scene world in about an hour (80 min shipped) on two CPU cores
and ship in a few MB, yet keep every structural feature a real SD checkpoint has (KL VAE,
cross-attention UNet, CLIP text transformer, SD's beta schedule; the shipped model uses its
zero-terminal-SNR v-prediction variant, as SD 2.x-era models do) so
exporting, quantizing and running it exercises the same code paths as the big models.
"""

from __future__ import annotations

from typing import Any

#: Latents are 4 x 16 x 16 for a 64 x 64 image (scale factor 4: shapes stay a few latents wide).
VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": [16, 32, 64],
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": 64,
    # No attention in the VAE: flat shapes need none, and it lets the VAE train on crops.
    "mid_block_add_attention": False,
}

UNET_CONFIG: dict[str, Any] = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": [32, 64, 64, 64],
    # Four levels (16, 8, 4, 2): at 2x2 every cell is a corner, so zero padding can tell a
    # cell where it is. Added to help "left"/"top"; it did not make position learnable in
    # the training time we have (docs/demo-model.md, "Known shortfall").
    # Cross-attention from 8x8 down only: 256-token attention (the costliest layer on a CPU)
    # stays out of the model.
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "cross_attention_dim": 64,
    "attention_head_dim": 4,
    "norm_num_groups": 16,
}



def unet_config(global_text: bool = False, scale_shift: bool = False, coordinates: bool = False) -> dict[str, Any]:
    """``UNET_CONFIG`` with the optional global prompt path (still three inputs, same export).

    ``global_text``: ``addition_embed_type="text"`` pools the text encoder's hidden states
    (attention pooling, as DeepFloyd IF does) into the time embedding, so every ResNet block
    gets the prompt, not only the cross-attention blocks. ``scale_shift``: the ResNet blocks
    apply that embedding as a GroupNorm scale and shift (AdaGN, as ADM's class conditioning)
    instead of adding it before the norm. The layout probe (docs/demo-model.md) showed the
    shipped UNet not using the prompt at all in 400 steps; with both, it does.
    ``coordinates``: two more input channels for the x and y planes export/coordinates.py
    appends, so the UNet can tell where a cell is and place the object where the prompt says.
    """
    config = dict(UNET_CONFIG)
    if global_text:
        # 4 heads of 16 over the 64-wide text states (diffusers' default, 64 heads, is 1 wide).
        config.update(addition_embed_type="text", addition_embed_type_num_heads=4)
    if scale_shift:
        config["resnet_time_scale_shift"] = "scale_shift"
    if coordinates:
        # x and y planes appended to the latents inside the graph (export/coordinates.py); the
        # checkpoint also records nanoedge.export.coordinates.CONFIG_KEY (train.build_unet).
        config["in_channels"] = config["out_channels"] + 2
    return config


TEXT_MAX_LENGTH = 24


def text_encoder_config(vocab_size: int, bos_id: int, eos_id: int, pad_id: int) -> dict[str, Any]:
    """CLIP text transformer sized for a ~60-word vocabulary and 24-token prompts."""
    return {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 256,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "max_position_embeddings": TEXT_MAX_LENGTH,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "projection_dim": 64,
    }


#: SD's own noise schedule (epsilon prediction), with DDIM as the sampler the package defaults to.
#: ``scheduler_config`` derives the variant a run can ask for (v-prediction, zero terminal SNR,
#: trailing spacing); docs/demo-model.md has what it did for position (not enough, so far).
SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "DDIMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "thresholding": False,
}


def scheduler_config(
    prediction_type: str = "epsilon", zero_terminal_snr: bool = False, timestep_spacing: str = "leading"
) -> dict[str, Any]:
    """SD's schedule with the prediction target, terminal SNR and spacing of a training run.

    With SD's betas the noisiest training step still keeps 6.8% of the latent (SNR 0.0047):
    on 16x16 latents that is enough for a model to read the layout from the noise instead
    of the prompt, while sampling starts from pure noise. Zero terminal SNR removes that
    leak; v-prediction keeps the target well defined there (epsilon is not), and trailing
    spacing makes the sampler start at the last, pure-noise step.
    """
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type must be epsilon or v_prediction, not {prediction_type!r}")
    config = dict(SCHEDULER_CONFIG, prediction_type=prediction_type, timestep_spacing=timestep_spacing)
    if zero_terminal_snr:
        config["rescale_betas_zero_snr"] = True
    return config
